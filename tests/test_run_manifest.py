"""RunManifest: a video's run record from creation to removal, and the refusal of a changed resume."""

from __future__ import annotations

import pytest

from lightning_matting.run.manifest import MANIFEST, RunManifest


def test_a_manifest_is_created_checked_completed_and_removed(tmp_path):
    manifest = RunManifest(tmp_path, "clip")
    assert manifest.path == tmp_path / "clip" / MANIFEST and not manifest.exists()
    manifest.mark_complete()  # a manifest-less run: nothing to do
    assert not manifest.exists()
    manifest.create({"codec": "FFV1", "source": "a.mkv"})
    assert manifest.exists() and not manifest.complete
    manifest.check_same_run({"codec": "FFV1", "source": "a.mkv"})
    with pytest.raises(
        ValueError,
        match=r"^VideoWriterCallback: cannot resume clip: codec, model changed since the interrupted run \(codec: "
        r"was FFV1, now mp4v; model: was None, now M\); rerun with the same settings, or pass resume=False and "
        r"overwrite=True to start again$",
    ):
        manifest.check_same_run({"codec": "mp4v", "source": "a.mkv", "model": "M"})
    manifest.remove_if_complete()
    assert manifest.exists()  # not complete: kept for a resume
    manifest.mark_complete()
    assert manifest.complete and manifest.read()["fingerprint"] == {"codec": "FFV1", "source": "a.mkv"}
    manifest.remove_if_complete()
    assert not manifest.exists() and list((tmp_path / "clip").iterdir()) == []


def test_an_unreadable_manifest_reads_as_an_empty_run_and_is_discarded(tmp_path):
    manifest = RunManifest(tmp_path, "clip")
    manifest.path.parent.mkdir()
    manifest.path.write_text("{not json")
    assert manifest.read() == {} and not manifest.complete
    manifest.discard()
    manifest.discard()
    assert not manifest.exists()
