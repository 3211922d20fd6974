"""Official checkpoints by name: downloads from a server on 127.0.0.1, resumed, verified, cached, offline, mirrored."""

from __future__ import annotations

import hashlib
import io
import threading
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from lightning_matting import MattingModule, OutputFormat, VideoInfo, load_model
from lightning_matting.cli import main as cli_main
from lightning_matting.models import build_model, weights
from lightning_matting.models.weights import DownloadError, RemoteFile, fetch
from lightning_matting.run.manifest import file_identity, fingerprint


class Server:
    """Serves `files` {url path: bytes}; honours Range unless `ignore_range`; `drop_after` bytes, the
    connection closes mid-file (on the first `drops` requests); records (path, Range header) per request."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.drop_after: int | None = None
        self.drops = 1
        self.ignore_range = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                server.requests.append((self.path, self.headers.get("Range")))
                if self.path not in server.files:
                    self.send_error(404)
                    return
                data, start = server.files[self.path], 0
                if self.headers.get("Range") and not server.ignore_range:
                    start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-"))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                if server.drop_after is not None and server.drops > 0:
                    server.drops -= 1
                    self.wfile.write(data[start : start + server.drop_after])
                    return  # HTTP/1.0: the connection closes, short of Content-Length
                self.wfile.write(data[start:])

            def log_message(self, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_port}"
        self.thread = threading.Thread(target=self.http.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.thread.join()


@pytest.fixture
def server():
    running = Server()
    yield running
    if running.thread.is_alive():
        running.stop()


@pytest.fixture(autouse=True)
def torch_home(tmp_path, monkeypatch) -> Path:
    """The cache under tmp_path; no offline or mirror setting from the environment."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(weights.OFFLINE_VARIABLE, raising=False)
    monkeypatch.delenv(weights.MIRROR_VARIABLE, raising=False)
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.fixture(scope="module")
def rvm_state() -> tuple[dict[str, torch.Tensor], bytes]:
    """A stand-in for rvm_mobilenetv3.pth: a state dict (float16 to keep it small) and its file's bytes."""
    torch.manual_seed(0)
    state = {key: value.half() if value.is_floating_point() else value for key, value in
             build_model("rvm-mobilenetv3").state_dict().items()}  # fmt: skip
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return state, buffer.getvalue()


def point_registry(monkeypatch, server: Server, variant: str, data: bytes, sha256: str | None = None) -> str:
    """Serve `data` as `variant`'s official checkpoint (its file name under /release/); returns the URL."""
    name = weights.OFFICIAL_WEIGHTS[variant].file_name
    server.files[f"/release/{name}"] = data
    url = f"{server.url}/release/{name}"
    registry = dict(weights.OFFICIAL_WEIGHTS)
    registry[variant] = RemoteFile(url, len(data), sha256)
    monkeypatch.setattr(weights, "OFFICIAL_WEIGHTS", registry)
    return url


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_official_downloads_once_verified_then_loads_from_the_cache(
    server, monkeypatch, torch_home, rvm_state
):
    state, data = rvm_state
    url = point_registry(monkeypatch, server, "rvm-mobilenetv3", data, sha256(data))
    model = load_model("rvm-mobilenetv3", "official")
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key].to(value.dtype), rtol=0, atol=0)
    assert sorted(path.name for path in torch_home.iterdir()) == [
        "rvm_mobilenetv3.pth",
        "rvm_mobilenetv3.pth.lock",
    ]
    assert (torch_home / "rvm_mobilenetv3.pth").read_bytes() == data
    assert len(server.requests) == 1

    server.stop()  # cached: no request, even offline
    monkeypatch.setenv(weights.OFFLINE_VARIABLE, "1")
    module = MattingModule("rvm-mobilenetv3", checkpoint="official")
    assert len(server.requests) == 1
    assert module.hparams["checkpoint"] == str(torch_home / "rvm_mobilenetv3.pth")
    assert file_identity(module.hparams["checkpoint"]) is not None  # a resume compares this file
    by_url = MattingModule("rvm-mobilenetv3", checkpoint=url)  # the same file: a resume may switch
    info, output_format = VideoInfo("clip", Fraction(30), 64, 48, 4), OutputFormat()
    fingerprints = [fingerprint(info, output_format, ["pha"], m, m.hparams, {}) for m in (module, by_url)]
    assert fingerprints[0] == fingerprints[1]


def test_downloaded_wrong_variant_is_named_by_the_strict_load(server, monkeypatch, torch_home, rvm_state):
    point_registry(monkeypatch, server, "rvm-resnet50", rvm_state[1])
    with pytest.raises(
        ValueError, match=r"rvm_resnet50.pth does not fit rvm-resnet50:(.|\n)*looks like rvm-mobilenetv3"
    ):
        load_model("rvm-resnet50", "official")


def test_a_url_checkpoint_is_fetched_into_the_cache(server, torch_home, rvm_state):
    server.files["/files/rvm_mobilenetv3.pth"] = rvm_state[1]
    load_model("rvm-mobilenetv3", f"{server.url}/files/rvm_mobilenetv3.pth")
    assert (torch_home / "rvm_mobilenetv3.pth").read_bytes() == rvm_state[1]


def test_hash_mismatch_deletes_the_file_and_names_both_hashes(server, monkeypatch, torch_home):
    data, expected = b"not the official file" * 100, "0" * 64
    url = point_registry(monkeypatch, server, "rvm-mobilenetv3", data, expected)
    with pytest.raises(DownloadError) as error:
        load_model("rvm-mobilenetv3", "official")
    message = str(error.value)
    assert f"{url} gave a file of SHA-256 {sha256(data)}, expected {expected}; it was deleted" in message
    assert f"put it at {torch_home / 'rvm_mobilenetv3.pth'}" in message
    assert not any(path.suffix in (".pth", ".partial") for path in torch_home.iterdir())


def test_a_dropped_connection_resumes_with_range(server):
    data = bytes(range(256)) * 1000
    server.files["/f/part.pth"] = data
    server.drop_after = 100_000
    path = fetch(RemoteFile(f"{server.url}/f/part.pth", len(data), sha256(data)))
    assert path.read_bytes() == data
    assert server.requests == [("/f/part.pth", None), ("/f/part.pth", "bytes=100000-")]


def test_a_server_ignoring_range_sends_it_all_again(server):
    data = bytes(range(256)) * 1000
    server.files["/f/part.pth"] = data
    server.drop_after, server.ignore_range = 100_000, True
    assert fetch(RemoteFile(f"{server.url}/f/part.pth", sha256=sha256(data))).read_bytes() == data
    assert [header for _, header in server.requests] == [None, "bytes=100000-"]


def test_a_transfer_that_keeps_breaking_keeps_its_part_for_the_next_run(server, torch_home):
    data = bytes(range(256)) * 1000
    server.files["/f/part.pth"] = data
    server.drop_after, server.drops = 10_000, 3
    file = RemoteFile(f"{server.url}/f/part.pth", sha256=sha256(data))
    with pytest.raises(DownloadError) as error:
        fetch(file)
    partial = torch_home / "part.pth.partial"
    assert (
        f"cannot download {file.url} into {torch_home / 'part.pth'} (ConnectionError: the connection closed "
        f"after 10000 of 236000 bytes); 30000 bytes are kept in {partial} and a rerun continues from there"
    ) in str(error.value)
    assert fetch(file).read_bytes() == data
    assert server.requests[-1] == ("/f/part.pth", "bytes=30000-")
    assert not partial.exists()


def test_404_names_the_url_the_cache_path_and_where_to_put_the_file(server, monkeypatch, torch_home):
    url = point_registry(monkeypatch, server, "rvm-resnet50", b"")
    del server.files["/release/rvm_resnet50.pth"]
    with pytest.raises(DownloadError) as error:
        load_model("rvm-resnet50", "official")
    target = torch_home / "rvm_resnet50.pth"
    assert str(error.value) == (
        f"cannot download {url} (HTTP 404 Not Found) into {target}: download {url} by hand and put it at "
        f"{target}, or set LIGHTNING_MATTING_MIRROR to a folder (or URL prefix) that holds rvm_resnet50.pth"
    )


def test_offline_makes_no_request_and_says_where_the_file_goes(server, monkeypatch, torch_home):
    url = point_registry(monkeypatch, server, "rvm-mobilenetv3", b"weights")
    monkeypatch.setenv(weights.OFFLINE_VARIABLE, "1")
    with pytest.raises(FileNotFoundError) as error:
        MattingModule("rvm-mobilenetv3", checkpoint="official")
    assert str(error.value).startswith(
        f"rvm_mobilenetv3.pth is not in the cache and LIGHTNING_MATTING_OFFLINE forbids downloading it from "
        f"{url}: download {url} by hand and put it at {torch_home / 'rvm_mobilenetv3.pth'}"
    )
    assert server.requests == []


def test_mirror_folder_replaces_the_host_even_offline(tmp_path, monkeypatch, torch_home):
    folder = tmp_path / "mirror"
    folder.mkdir()
    (folder / "pytorch_mobilenetv2.pth").write_bytes(b"from the mirror")
    monkeypatch.setenv(weights.MIRROR_VARIABLE, str(folder))
    monkeypatch.setenv(weights.OFFLINE_VARIABLE, "1")
    path = fetch(weights.OFFICIAL_WEIGHTS["mattingrefine-mobilenetv2"])
    assert path == torch_home / "pytorch_mobilenetv2.pth"
    assert path.read_bytes() == b"from the mirror"
    with pytest.raises(FileNotFoundError, match=rf"is the folder {folder}, which holds no rvm_resnet50.pth"):
        fetch(weights.OFFICIAL_WEIGHTS["rvm-resnet50"])


def test_mirror_url_replaces_the_host(server, monkeypatch, torch_home):
    server.files["/mirror/rvm_resnet50.pth"] = b"mirrored"
    monkeypatch.setenv(weights.MIRROR_VARIABLE, f"{server.url}/mirror/")
    assert fetch(weights.OFFICIAL_WEIGHTS["rvm-resnet50"]).read_bytes() == b"mirrored"
    assert server.requests == [("/mirror/rvm_resnet50.pth", None)]


def test_official_for_a_base_variant_points_to_its_refine_variant():
    with pytest.raises(ValueError) as error:
        load_model("mattingbase-resnet101", "official")
    assert str(error.value) == (
        "checkpoint='official': 'mattingbase-resnet101' has no official checkpoint; the official "
        "BackgroundMattingV2 checkpoint of this backbone holds the MattingRefine: use model "
        "'mattingrefine-resnet101' (MattingModule's training.stage='base' trains its base network alone); variants "
        "with one: mattingrefine-resnet50, mattingrefine-resnet101, mattingrefine-mobilenetv2, rvm-mobilenetv3, "
        "rvm-resnet50"
    )


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_:
        cli_main(["weights", *args])
    return exit_.value.code


def test_weights_list_shows_every_official_checkpoint_and_whether_it_is_cached(capsys, torch_home):
    torch_home.mkdir(parents=True)
    (torch_home / "rvm_resnet50.pth").write_bytes(b"x" * 2_500_000)
    assert run_cli(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["variant", "file", "size", "cached", "source"]
    rows = {line.split()[0]: line.split() for line in lines[1:-1]}
    assert sorted(rows) == sorted(weights.OFFICIAL_WEIGHTS)
    assert rows["rvm-resnet50"] == [
        "rvm-resnet50", "rvm_resnet50.pth", "2.5", "MB", "yes",
        "https://github.com/PeterL1n/RobustVideoMatting/releases/download/v1.0.0/rvm_resnet50.pth",
    ]  # fmt: skip
    assert rows["mattingrefine-resnet50"][1:4] == ["pytorch_resnet50.pth", "?", "no"]
    assert lines[-1] == f"cache: {torch_home}"


def test_weights_download_fetches_and_checks_each_then_fails_on_a_missing_one(
    server, monkeypatch, capsys, torch_home, rvm_state
):
    server.files["/mirror/rvm_mobilenetv3.pth"] = rvm_state[1]
    monkeypatch.setenv(weights.MIRROR_VARIABLE, f"{server.url}/mirror")
    assert run_cli(["download", "rvm-mobilenetv3"]) == 0
    assert capsys.readouterr().out == f"rvm-mobilenetv3: {torch_home / 'rvm_mobilenetv3.pth'}\n"

    assert run_cli(["download", "all"]) == 1  # the rest is missing from the mirror
    captured = capsys.readouterr()
    assert captured.out == f"rvm-mobilenetv3: {torch_home / 'rvm_mobilenetv3.pth'}\n"
    assert f"rvm-resnet50: cannot download {server.url}/mirror/rvm_resnet50.pth (HTTP 404" in captured.err
    assert len(server.requests) == 1 + 4

    assert run_cli(["download", "mattingbase-resnet50"]) == 2
    assert "no official checkpoint for mattingbase-resnet50; expected any of" in capsys.readouterr().err


def test_an_unreachable_host_names_the_url_and_where_to_put_the_file(server, torch_home):
    url = f"{server.url}/f/gone.pth"
    server.stop()
    with pytest.raises(DownloadError) as error:
        fetch(RemoteFile(url))
    target = torch_home / "gone.pth"
    assert str(error.value).startswith(f"cannot download {url} into {target} (URLError: ")
    assert str(error.value).endswith(f"; or download {url} by hand and put it at {target}, or set "
                                     "LIGHTNING_MATTING_MIRROR to a folder (or URL prefix) that holds gone.pth")  # fmt: skip
    assert "bytes are kept" not in str(error.value)


def test_an_unwritable_cache_is_named(tmp_path, monkeypatch):
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "not-a-folder"))
    file = weights.OFFICIAL_WEIGHTS["rvm-mobilenetv3"]
    target = tmp_path / "not-a-folder" / "hub" / "checkpoints" / "rvm_mobilenetv3.pth"
    with pytest.raises(DownloadError) as error:
        fetch(file)
    assert str(error.value).startswith(f"cannot write into {target.parent} (")
    assert str(error.value).endswith(f"download {file.url} by hand and put it at {target}, or set "
                                     "LIGHTNING_MATTING_MIRROR to a folder (or URL prefix) that holds rvm_mobilenetv3.pth")  # fmt: skip
