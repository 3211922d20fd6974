"""Video names are data: each becomes one folder inside the output folder, whatever it holds."""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from conftest import read_video
from test_any_module import predict

from lightning_matting.callbacks.video_files import VideoFiles
from lightning_matting.video_names import folder_name
from lightning_matting.writers import OutputFormat


@pytest.mark.parametrize(
    ("name", "folder"),
    [
        ("clip_01", "clip_01"),
        ("../escaped", "___escaped"),
        ("/abs/path", "_abs_path"),
        ("a/b", "a_b"),
        ("a\\b", "a_b"),
        ("..", "__"),
        (".", "_"),
        ("", "_"),
        (".hidden", "_hidden"),
        ("\x00x", "_x"),
        ("tab\there", "tab_here"),
        ("con", "con_"),
        ("NUL.txt", "NUL_.txt"),
        ("com7", "com7_"),
        ("LPT1", "LPT1_"),
        ("console", "console"),
        ("trailing. ", "trailing__"),
        ('what?<a|b>:"*', "what__a_b____"),
    ],
)
def test_a_video_name_becomes_one_safe_folder_name(name, folder):
    assert folder_name(name) == folder
    assert folder_name(folder) == folder  # a safe name stays as it is


@pytest.mark.parametrize("value", [3, None, b"clip", ["a"]])
def test_a_video_name_that_is_not_a_string_is_a_type_error_naming_it(value):
    with pytest.raises(
        TypeError,
        match=rf"a video name must be a str, got {re.escape(repr(value))} \({type(value).__name__}\)",
    ):
        folder_name(value)


@pytest.mark.parametrize("name", ["../escaped", "/abs/path", "a/b", "con", "\x00x", ".."])
def test_hostile_names_write_nothing_outside_the_root(tmp_path, name):
    root = tmp_path / "root"
    files = VideoFiles(OutputFormat(fourcc="FFV1", segment_seconds=0), root, ["pha"])
    with pytest.warns(
        UserWarning, match=re.escape(f"video {name!r} is written to the folder {folder_name(name)!r}")
    ):
        files.add(name, {"pha": torch.zeros(2, 1, 8, 8)})
    files.close_all()
    assert [path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*") if path.is_file()] == [
        f"root/{folder_name(name)}/pha.mkv"
    ]
    assert files.paths == {name: {"pha": root / folder_name(name) / "pha.mkv"}}


def test_two_names_that_clean_to_one_folder_are_an_error_naming_both(tmp_path):
    files = VideoFiles(OutputFormat(fourcc="FFV1", segment_seconds=0), tmp_path, ["pha"])
    files.add("a_b", {"pha": torch.zeros(1, 1, 8, 8)})
    with pytest.raises(ValueError, match=r"videos 'a_b' and 'a/b' both become the folder 'a_b'"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            files.add("a/b", {"pha": torch.zeros(1, 1, 8, 8)})
    files.close_all()
    assert len(read_video(tmp_path / "a_b" / "pha.mkv")[0]) == 1


def test_a_predicted_video_named_to_escape_is_written_inside_output_dir(tmp_path):
    step = lambda self, batch: {"pha": batch[1], "video": "../escaped"}  # noqa: E731
    with pytest.warns(UserWarning, match=r"video '../escaped' is written to the folder '___escaped'"):
        callback = predict(tmp_path, step)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]
    assert len(read_video(tmp_path / "out" / "___escaped" / "pha.mp4")[0]) == 16
    assert callback.written == {"../escaped": {"pha": tmp_path / "out" / "___escaped" / "pha.mp4"}}


def test_rgba_into_opencv_names_the_output_and_the_codecs_with_alpha_and_leaves_no_file(tmp_path):
    files = VideoFiles(OutputFormat(segment_seconds=0), tmp_path, ["com"])
    with pytest.raises(
        ValueError,
        match=r"output 'com' has 4 channels \(RGBA\), which OpenCV's mp4v cannot store: choose codec= one of "
        r"prores4444, vp9, ffv1 \(PyAV\), or format='image_sequence'",
    ):
        files.add("clip", {"com": torch.zeros(2, 4, 8, 8)})
    assert list(tmp_path.rglob("*")) == []


def test_a_refused_first_batch_leaves_no_file_and_no_parts(tmp_path):
    files = VideoFiles(OutputFormat(fourcc="FFV1", segment_seconds=0.1), tmp_path, ["pha"], segmented=True)
    with pytest.raises(ValueError, match=r"frames must be float in \[0, 1\] or uint8"):
        files.add("clip", {"pha": torch.zeros(2, 1, 8, 8, dtype=torch.int32)})
    files.close_all(reason="ValueError")
    assert list(tmp_path.rglob("*")) == []
