"""The official checkpoints by variant, downloaded once into torch hub's cache folder and verified.

`checkpoint="official"` (or an http(s) URL) resolves to a file in `torch.hub.get_dir()/checkpoints`
(`$TORCH_HOME/hub/checkpoints`), the folder `torch.hub.load_state_dict_from_url` uses, under the URL's file
name. A download shows its progress on stderr (a terminal only), resumes an interrupted transfer with an
HTTP Range request, is checked against its pinned size and SHA-256 where the project publishes them, and
lands under its name only when whole. `LIGHTNING_MATTING_OFFLINE=1` never touches the network;
`LIGHTNING_MATTING_MIRROR` (a URL prefix or a local folder) replaces the host of every download.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import BinaryIO

import torch
from tqdm import tqdm

from lightning_matting import __version__
from lightning_matting.durable import replace_durably

try:
    import fcntl
except ImportError:  # Windows: concurrent downloads of one file are not serialised
    fcntl = None

OFFLINE_VARIABLE = "LIGHTNING_MATTING_OFFLINE"
MIRROR_VARIABLE = "LIGHTNING_MATTING_MIRROR"
_ATTEMPTS = 3  # transfers per download; each after the first resumes where the previous one stopped
_TIMEOUT_S = 60
_CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """A file to download: its URL and, where its publisher states them, its size and SHA-256.

    Attributes:
        url: The http(s) URL; its last path segment is the file name in the cache.
        size: The size in bytes, or None when no public source states it.
        sha256: The SHA-256 as 64 lowercase hex digits, or None when no public source states it.
    """

    url: str
    size: int | None = None
    sha256: str | None = None

    @property
    def file_name(self) -> str:
        """The URL's last path segment (`rvm_mobilenetv3.pth`)."""
        return Path(urllib.parse.urlparse(self.url).path).name


class DownloadError(OSError):
    """A download failed (network, HTTP status, size or SHA-256); the message says where to put the file."""


_BGMV2 = "https://github.com/PeterL1n/BackgroundMattingV2/releases/download/v1.0.0"
_RVM = "https://github.com/PeterL1n/RobustVideoMatting/releases/download/v1.0.0"
# BackgroundMattingV2 publishes one PyTorch checkpoint per backbone; it holds the MattingRefine (base network
# and refiner), which a mattingbase-* variant's strict load refuses, so only mattingrefine-* have one.
OFFICIAL_WEIGHTS: Mapping[str, RemoteFile] = MappingProxyType(
    {
        # github.com/PeterL1n/BackgroundMattingV2 README.md, "Model / Weights": the release v1.0.0
        # (releases/tag/v1.0.0); file names as in its doc/model_usage.md and export_onnx.py examples
        "mattingrefine-resnet50": RemoteFile(f"{_BGMV2}/pytorch_resnet50.pth"),
        "mattingrefine-resnet101": RemoteFile(f"{_BGMV2}/pytorch_resnet101.pth"),
        "mattingrefine-mobilenetv2": RemoteFile(f"{_BGMV2}/pytorch_mobilenetv2.pth"),
        # github.com/PeterL1n/RobustVideoMatting README.md, "Download" (PyTorch), and hubconf.py
        "rvm-mobilenetv3": RemoteFile(f"{_RVM}/rvm_mobilenetv3.pth"),
        "rvm-resnet50": RemoteFile(f"{_RVM}/rvm_resnet50.pth"),
    }
)


def official_weights(variant: str) -> RemoteFile:
    """The official checkpoint of `variant`.

    Raises:
        ValueError: `variant` has no official checkpoint (mattingbase-*: the refine variant of its backbone
            has one), naming the variants that do.
    """
    if variant in OFFICIAL_WEIGHTS:
        return OFFICIAL_WEIGHTS[variant]
    hint = ""
    if variant.startswith("mattingbase-"):
        refine = variant.replace("mattingbase-", "mattingrefine-")
        hint = (
            f"; the official BackgroundMattingV2 checkpoint of this backbone holds the MattingRefine: use "
            f"model {refine!r} (MattingModule's training.stage='base' trains its base network alone)"
        )
    raise ValueError(
        f"checkpoint='official': {variant!r} has no official checkpoint{hint}; variants with one: "
        f"{', '.join(OFFICIAL_WEIGHTS)}"
    )


# The demo model shipped inside the package: MattingBase-MobileNetV2 trained on synthetic clips.
DEMO_VARIANT = "mattingbase-mobilenetv2"
DEMO_WEIGHTS = Path(__file__).resolve().parents[1] / "assets" / "demo_mattingbase_mobilenetv2.pth"


def is_remote(checkpoint: object) -> bool:
    """Whether `checkpoint` is a name `resolve_checkpoint` turns into a file: "official", "demo" (the packaged
    demo model) or an http(s) URL."""
    return isinstance(checkpoint, str) and (
        checkpoint in ("official", "demo") or checkpoint.startswith(("http://", "https://"))
    )


def resolve_checkpoint(checkpoint: str, variant: str | os.PathLike) -> Path:
    """The local file of `checkpoint` "official" (the official checkpoint of `variant`), "demo" or an http(s) URL.

    A URL of an official checkpoint is checked against that checkpoint's pinned size and hash.

    Args:
        checkpoint: "official", "demo" (the packaged demo model, for mattingbase-mobilenetv2) or an http(s) URL
            (`is_remote`).
        variant: The variant the checkpoint is for (a name of `lightning_matting.VARIANTS`).

    Returns:
        The cached file, downloaded first when absent (`fetch`).

    Raises:
        ValueError: "official" for a variant without an official checkpoint, "demo" for another variant than
            the demo model's, or a URL without a file name.
        FileNotFoundError: Offline, and the file is not in the cache.
        DownloadError: The download failed.
    """
    if checkpoint == "demo":
        if str(variant) != DEMO_VARIANT:
            raise ValueError(
                f"checkpoint='demo' is the packaged demo model, a {DEMO_VARIANT}; got model {str(variant)!r}"
            )
        return DEMO_WEIGHTS
    if checkpoint == "official":
        return fetch(official_weights(str(variant)))
    known = next((file for file in OFFICIAL_WEIGHTS.values() if file.url == checkpoint), None)
    return fetch(known or RemoteFile(checkpoint))


def cache_dir() -> Path:
    """The folder downloads land in: `torch.hub.get_dir()/checkpoints` ($TORCH_HOME/hub/checkpoints)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def cached_path(file: RemoteFile) -> Path:
    """Where `file` is (or will be) in the cache."""
    if not file.file_name:
        raise ValueError(f"checkpoint URL {file.url!r} names no file: expected https://host/.../name.pth")
    return cache_dir() / file.file_name


def fetch(file: RemoteFile) -> Path:
    """The cached copy of `file`, downloaded (or copied from the mirror folder) when absent, never again after.

    Args:
        file: What to fetch.

    Returns:
        Its path in `cache_dir()`.

    Raises:
        FileNotFoundError: `LIGHTNING_MATTING_OFFLINE` is set and the file is not cached (nor in a mirror
            folder), or the mirror folder lacks it.
        DownloadError: The transfer failed three times (the partial file stays: a rerun resumes it), or
            the file has another size or SHA-256 than pinned (it is deleted). The message names the URL, the
            cache path and where to put the file by hand.
    """
    target = cached_path(file)
    if target.is_file():
        return target
    mirror = os.environ.get(MIRROR_VARIABLE, "")
    mirror_url = mirror.startswith(("http://", "https://"))
    source = f"{mirror.rstrip('/')}/{file.file_name}" if mirror else file.url
    if os.environ.get(OFFLINE_VARIABLE, "") not in ("", "0") and (mirror_url or not mirror):
        raise FileNotFoundError(
            f"{file.file_name} is not in the cache and {OFFLINE_VARIABLE} forbids downloading it from "
            f"{source}: {_by_hand(file, target)}"
        )
    partial = target.with_name(f"{target.name}.partial")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        lock = open(target.with_name(f"{target.name}.lock"), "a")
    except OSError as error:
        raise DownloadError(
            f"cannot write into {target.parent} ({error}): {_by_hand(file, target)}"
        ) from error
    with lock:
        if fcntl is not None:  # processes on one machine download a file one at a time
            fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_file():  # another process finished it while this one waited
            return target
        if mirror and not mirror_url:
            _copy(Path(mirror) / file.file_name, partial, file, target)
        else:
            _download(source, partial, file, target)
        _verify(partial, source, file, target)
        replace_durably(partial, target)  # on the disk before it has its name: a power cut leaves no stub
    return target


def _by_hand(file: RemoteFile, target: Path) -> str:
    return (
        f"download {file.url} by hand and put it at {target}, or set {MIRROR_VARIABLE} to a folder (or URL "
        f"prefix) that holds {file.file_name}"
    )


def _copy(source: Path, partial: Path, file: RemoteFile, target: Path) -> None:
    if not source.is_file():
        raise FileNotFoundError(
            f"{MIRROR_VARIABLE} is the folder {source.parent}, which holds no {file.file_name}: "
            f"{_by_hand(file, target)}"
        )
    shutil.copyfile(source, partial)


def _download(url: str, partial: Path, file: RemoteFile, target: Path) -> None:
    """Transfer `url` into `partial`, continuing a partial file with a Range request, retrying a broken one."""
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            _transfer(url, partial)
            return
        except urllib.error.HTTPError as error:
            if error.code == 416 and partial.is_file():  # the partial file already holds every byte
                return
            raise DownloadError(
                f"cannot download {url} (HTTP {error.code} {error.reason}) into {target}: "
                f"{_by_hand(file, target)}"
            ) from error
        except (OSError, http.client.HTTPException) as error:
            if attempt == _ATTEMPTS:
                kept = partial.stat().st_size if partial.is_file() else 0
                resume = (
                    f"; {kept} bytes are kept in {partial} and a rerun continues from there" if kept else ""
                )
                raise DownloadError(
                    f"cannot download {url} into {target} ({type(error).__name__}: {error}){resume}; or "
                    f"{_by_hand(file, target)}"
                ) from error


def _transfer(url: str, partial: Path) -> None:
    """One request for `url`: from the start, or from the end of `partial` when the server honours Range."""
    start = partial.stat().st_size if partial.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": f"lightning-matting/{__version__}"})
    if start:
        request.add_header("Range", f"bytes={start}-")
    with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
        resumed = start > 0 and response.status == 206  # 200: the server ignored Range and sends it all
        length = response.headers.get("Content-Length")
        offset = start if resumed else 0
        with (
            open(partial, "ab" if resumed else "wb") as output,
            tqdm(
                total=int(length) + offset if length else None,
                initial=offset,
                unit="B",
                unit_scale=True,
                desc=Path(urllib.parse.urlparse(url).path).name,
                file=sys.stderr,
                disable=None,  # a terminal only
            ) as progress,
        ):
            received = _copy_stream(response, output, progress)
        if length and received != int(length):  # urllib reads a connection closed early as the end
            raise ConnectionError(f"the connection closed after {received} of {length} bytes")


def _copy_stream(response: BinaryIO, output: BinaryIO, progress: tqdm) -> int:
    received = 0
    while chunk := response.read(_CHUNK):
        output.write(chunk)
        progress.update(len(chunk))
        received += len(chunk)
    return received


def _verify(partial: Path, source: str, file: RemoteFile, target: Path) -> None:
    """Delete `partial` and raise DownloadError when its size or SHA-256 differs from `file`'s pinned ones."""
    size = partial.stat().st_size
    problem = None
    if file.size is not None and size != file.size:
        problem = f"{size} bytes, expected {file.size}"
    elif file.sha256 is not None:
        digest = hashlib.sha256()
        with open(partial, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        if digest.hexdigest() != file.sha256:
            problem = f"SHA-256 {digest.hexdigest()}, expected {file.sha256}"
    if problem is not None:
        partial.unlink()
        raise DownloadError(f"{source} gave a file of {problem}; it was deleted: {_by_hand(file, target)}")
