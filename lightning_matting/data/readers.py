"""Frame readers for video files (OpenCV) and image folders: RGB tensors, uint8 or float, exact metadata."""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import torch
from torch import Tensor

from lightning_matting.metadata import VideoInfo, to_fraction

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
# Decode forward instead of seeking when the requested frame is at most this many frames ahead.
_MAX_FORWARD_SKIP = 64


class FrameReader(Protocol):
    """What datasets need from a reader: metadata, an exact length and frames [3,H,W] RGB.

    `read_uint8(i)` is frame i as decoded, uint8 in [0, 255]; `reader[i]` is the same frame as float32 in
    [0, 1], exactly `frame_to_float(reader.read_uint8(i))`.
    """

    info: VideoInfo

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Tensor: ...

    def read_uint8(self, index: int) -> Tensor: ...


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key that orders digit runs by value: '2.png' < '10.png', case-insensitive."""
    parts = re.split(r"(\d+)", name)
    return tuple(int(part) if i % 2 else part.lower() for i, part in enumerate(parts)) + (name,)


def frame_to_float(frame: Tensor) -> Tensor:
    """uint8 frame(s) in [0, 255] -> float32 in [0, 1]: value / 255, which `frame_to_uint8` undoes exactly."""
    if frame.dtype != torch.uint8:
        raise ValueError(f"frame must be a uint8 tensor (0-255), got dtype {frame.dtype}")
    return frame.float().div_(255)


def frame_to_uint8(frame: Tensor) -> Tensor:
    """Float frame(s) in [0, 1] -> uint8 in [0, 255]: clamped, x255, rounded to nearest (half to even)."""
    return frame.clamp(0, 1).mul_(255).round_().to(torch.uint8)


def _bgr_to_tensor(image: np.ndarray) -> Tensor:
    """OpenCV uint8 BGR [H,W,3] -> contiguous uint8 RGB tensor [3,H,W], values unchanged."""
    # The planes in reverse order: one copy, about 3x cheaper than cvtColor + permute + contiguous.
    return torch.from_numpy(np.stack(cv2.split(image)[::-1]))


def read_image(path: str | Path) -> Tensor:
    """One image file as float32 RGB [3,H,W] in [0,1]: `frame_to_float(read_image_uint8(path))`."""
    return frame_to_float(read_image_uint8(path))


def read_image_uint8(path: str | Path) -> Tensor:
    """One image file as uint8 RGB [3,H,W] in [0, 255] as decoded (alpha dropped, 16-bit reduced to 8-bit)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot decode image file {path} (expected png, jpg, bmp, tiff or webp)")
    return _bgr_to_tensor(image)


class _Frames(ABC):
    """The float view and iteration shared by the readers: `reader[i]` is `frame_to_float(read_uint8(i))`."""

    info: VideoInfo

    @abstractmethod
    def read_uint8(self, index: int) -> Tensor:
        """Frame `index` as uint8 RGB [3,H,W] in [0, 255], exactly as decoded."""

    def __len__(self) -> int:
        return self.info.num_frames

    def __getitem__(self, index: int) -> Tensor:
        """Frame `index` as float32 RGB [3,H,W] in [0,1]."""
        return frame_to_float(self.read_uint8(index))

    def __iter__(self) -> Iterator[Tensor]:
        return (self[i] for i in range(len(self)))


class VideoReader(_Frames):
    """Frames of a video file as RGB tensors [3,H,W]; `len()` is the exact decodable count.

    `reader[i]` is frame i as float32 in [0,1]; `reader.read_uint8(i)` the same frame as decoded, uint8 in
    [0, 255] (a quarter of the bytes, no float conversion: what datasets hand to DataLoader workers).

    `info` holds the name (file stem unless given), the container's fps as an exact fraction (the average
    rate of a variable-rate file), the size and the number of frames; for a variable-rate file (as phones
    record) also each frame's presentation time (`frame_times`, read from the container's packets with
    PyAV; without the `[av]` extra every file counts as constant-rate). The header's frame count is trusted only after reading its last frame: when that
    fails the last decodable frame is found by a bounded backwards search (exponential steps, then
    bisection); a header without a count costs one full decode. Sequential reads never seek; a request a
    little ahead decodes forward, anything else seeks. The OpenCV capture opens lazily, so a reader can be
    pickled into DataLoader workers.

    Args:
        path: The video file.
        name: The video's name; None: the file's stem.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file is empty, has no decodable frame or no frame rate, or two frames of a variable-rate
            file share a timestamp (naming it, and the frames).

    Example::

        reader = VideoReader("clip.mp4")
        print(reader.info.fps, len(reader))
        first = reader[0]  # float32 [3, H, W] in [0, 1]
        first_uint8 = reader.read_uint8(0)  # uint8 [3, H, W], as decoded
    """

    def __init__(self, path: str | Path, name: str | None = None) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"video file not found: {self.path}")
        if self.path.is_dir():
            raise IsADirectoryError(
                f"expected a video file, got a folder: {self.path} (use ImageSequenceReader)"
            )
        if self.path.stat().st_size == 0:
            raise ValueError(f"video file is empty (0 bytes): {self.path}")
        capture = self._open()
        try:
            ok, first = capture.read()
            if not ok:
                raise ValueError(f"cannot decode video file {self.path}: no decodable frame")
            self._first_ms = capture.get(cv2.CAP_PROP_POS_MSEC)  # frame 0's time, as OpenCV reports times
            fps = capture.get(cv2.CAP_PROP_FPS)
            if not math.isfinite(fps) or fps <= 0:
                raise ValueError(f"video file {self.path} has no frame rate in its header")
            header_count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
            num_frames = _count_decodable_frames(capture, int(header_count) if header_count > 0 else 0)
        finally:
            capture.release()
        height, width = first.shape[:2]
        fps = to_fraction(fps)
        times = _variable_frame_times(self.path, fps, num_frames)
        if times is not None:  # OpenCV counts a variable-rate file by time at the average rate: short or long
            num_frames = len(times)
            self._half_gap_ms = min(float(b - a) for a, b in zip(times, times[1:], strict=False)) * 500
        self.info = VideoInfo(name or self.path.stem, fps, width, height, num_frames, frame_times=times)
        self._capture: cv2.VideoCapture | None = None
        self._next_index: int | None = 0

    def _open(self) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not capture.isOpened():
            raise ValueError(f"cannot decode video file {self.path}: {_why_unopened(self.path)}")
        return capture

    def read_uint8(self, index: int) -> Tensor:
        """Frame `index` as uint8 RGB [3,H,W] in [0, 255], exactly as decoded."""
        if not 0 <= index < len(self):
            raise IndexError(f"frame {index} out of range for {self.path} with {len(self)} frames")
        if self._capture is None:
            self._capture = self._open()
            self._next_index = 0
        if self._next_index is not None and 0 <= index - self._next_index <= _MAX_FORWARD_SKIP:
            for _ in range(index - self._next_index):
                self._capture.grab()
            ok, frame = self._capture.read()
        elif self.info.frame_times is not None:
            ok, frame = self._read_by_time(index)
        else:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, index)
            ok, frame = self._capture.read()
        if not ok:
            self._next_index = None  # position unknown: the next request seeks
            raise RuntimeError(f"cannot decode frame {index} of {self.path} ({len(self)} frames)")
        self._next_index = index + 1
        return _bgr_to_tensor(frame)

    def _read_by_time(self, index: int) -> tuple[bool, np.ndarray | None]:
        """Frame `index` of a variable-rate file: OpenCV seeks such files by time at the average rate, so seek
        by time a little early and decode forward to the frame with this frame's timestamp; failing that,
        decode from the first frame, counting."""
        times = self.info.frame_times
        target = float(times[index]) * 1000  # ms from the first frame
        tolerance = self._half_gap_ms
        for lead in (1000.0, 5000.0):
            self._capture.set(cv2.CAP_PROP_POS_MSEC, max(0.0, self._first_ms + target - lead))
            while self._capture.grab():
                shown = self._capture.get(cv2.CAP_PROP_POS_MSEC) - self._first_ms
                if abs(shown - target) < tolerance:
                    return self._capture.retrieve()
                if shown > target:
                    break
        self._capture.release()
        self._capture = self._open()
        for _ in range(index):
            self._capture.grab()
        return self._capture.read()

    def close(self) -> None:
        """Release the decoder; a later read reopens it."""
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_capture": None, "_next_index": 0}


def _why_unopened(path: Path) -> str:
    """Why OpenCV could not open `path`: a file without a video stream is named as such (with PyAV)."""
    try:
        import av
    except ImportError:
        return "OpenCV/FFmpeg could not open it"
    try:
        with av.open(str(path)) as container:
            kinds = sorted({stream.type for stream in container.streams})
    except av.FFmpegError:
        return "OpenCV/FFmpeg could not open it (not a video file FFmpeg knows)"
    if "video" not in kinds:
        return f"it has no video stream (its streams: {', '.join(kinds) or 'none'})"
    return "OpenCV/FFmpeg could not open it"


def _variable_frame_times(path: Path, fps: Fraction, num_frames: int) -> tuple[Fraction, ...] | None:
    """Each frame's time in seconds from the first (one per video packet), for a variable-rate file; None for a
    constant-rate one, whose frames OpenCV counts and seeks exactly.

    Only a file that looks variable-rate has its packets' timestamps read (demuxed, not decoded): its average
    and base rates differ (MP4/MOV compute the average from the timestamps), or its duration is not
    `num_frames / fps` (Matroska, whose average rate is a guess), or it has no duration. Without PyAV: None.
    """
    try:
        import av
    except ImportError:
        return None
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if not _looks_variable_rate(container, stream, fps, num_frames):
                return None
            pts = sorted(packet.pts for packet in container.demux(stream) if packet.pts is not None)
            time_base = stream.time_base
    except (av.FFmpegError, IndexError):
        return None
    if len(pts) < 2:
        return None
    times = tuple((value - pts[0]) * time_base for value in pts)
    repeated = next((index for index in range(1, len(times)) if times[index] == times[index - 1]), None)
    if repeated is not None:
        raise ValueError(
            f"video file {path}: frames {repeated - 1} and {repeated} have the same timestamp "
            f"({float(times[repeated]):.6f} s); remux it with fresh timestamps (ffmpeg -fflags +genpts)"
        )
    tick = time_base / 2
    if all(abs(time - index / fps) <= tick for index, time in enumerate(times)):
        return None
    return times


def _looks_variable_rate(container: Any, stream: Any, fps: Fraction, num_frames: int) -> bool:
    """Whether a PyAV video stream's header hints at variable frame timing (see `_variable_frame_times`)."""
    if not (stream.average_rate and stream.base_rate) or stream.average_rate != stream.base_rate:
        return True
    if stream.duration:
        duration = stream.duration * stream.time_base
    elif container.duration:
        duration = Fraction(container.duration, 1_000_000)  # FFmpeg's AV_TIME_BASE
    else:
        return True
    return abs(duration - num_frames / fps) > Fraction(3, 2) / fps


def _can_decode(capture: cv2.VideoCapture, index: int) -> bool:
    capture.set(cv2.CAP_PROP_POS_FRAMES, index)
    return capture.grab()


def _count_decodable_frames(capture: cv2.VideoCapture, header_count: int) -> int:
    """Exact frame count, given a capture that has just read frame 0 and the header's count (0: none)."""
    if header_count <= 0:
        count = 1
        while capture.grab():
            count += 1
        return count
    if header_count == 1 or _can_decode(capture, header_count - 1):
        count = header_count  # the header may also under-count: read on past its end
        while capture.grab():
            count += 1
        return count
    good, bad, step = 0, header_count - 1, 1
    while bad - step > 0:
        if _can_decode(capture, bad - step):
            good = bad - step
            break
        bad, step = bad - step, step * 2
    while bad - good > 1:
        middle = (good + bad) // 2
        if _can_decode(capture, middle):
            good = middle
        else:
            bad = middle
    return good + 1


class ImageSequenceReader(_Frames):
    """Frames of a folder of images, in natural order (2.png before 10.png), as RGB tensors [3,H,W].

    `reader[i]` is image i as float32 in [0,1]; `reader.read_uint8(i)` the same image as decoded, uint8.

    The fps is the user's (default 30); the size is the first image's and every frame must match it.
    Files with other extensions are ignored; see `IMAGE_EXTENSIONS`.
    """

    def __init__(self, folder: str | Path, fps: float | str | Fraction = 30, name: str | None = None) -> None:
        self.folder = Path(folder)
        if not self.folder.exists():
            raise FileNotFoundError(f"image folder not found: {self.folder}")
        if not self.folder.is_dir():
            raise NotADirectoryError(f"expected a folder of images, got a file: {self.folder}")
        files = [p for p in self.folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
        if not files:
            extensions = ", ".join(sorted(IMAGE_EXTENSIONS))
            raise ValueError(f"image folder {self.folder} holds no images ({extensions})")
        self.files = sorted(files, key=lambda p: natural_key(p.name))
        _, height, width = read_image_uint8(self.files[0]).shape
        self.info = VideoInfo(name or self.folder.name, to_fraction(fps), width, height, len(self.files))

    def read_uint8(self, index: int) -> Tensor:
        """Image `index` as uint8 RGB [3,H,W] in [0, 255], exactly as decoded."""
        if not 0 <= index < len(self):
            raise IndexError(f"frame {index} out of range for {self.folder} with {len(self)} images")
        frame = read_image_uint8(self.files[index])
        if frame.shape[1:] != (self.info.height, self.info.width):
            raise ValueError(
                f"image {self.files[index]} is {frame.shape[2]}x{frame.shape[1]} but the sequence is "
                f"{self.info.width}x{self.info.height} (size of {self.files[0].name})"
            )
        return frame


def open_reader(
    path: str | Path, fps: float | str | Fraction = 30, name: str | None = None
) -> VideoReader | ImageSequenceReader:
    """A folder -> ImageSequenceReader at `fps`; anything else -> VideoReader (fps from the container)."""
    path = Path(path)
    if path.is_dir():
        return ImageSequenceReader(path, fps=fps, name=name)
    return VideoReader(path, name=name)
