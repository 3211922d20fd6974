"""Frame readers for video files and image folders: RGB(A) tensors at the source's precision, exact metadata.

8-bit sources decode to uint8 (OpenCV); deeper ones (10/12-bit video through PyAV, 16-bit PNG/TIFF) to uint16,
so nothing is truncated to 8 bits; `frame_to_float` makes floats in [0, 1] of either.
"""

from __future__ import annotations

import bisect
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

from lightning_matting.full_scale import FULL_SCALE
from lightning_matting.metadata import VideoInfo, frame_time, to_fraction

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
# The first bytes of the image types OpenCV decodes by content, whatever a file's extension; WebP: RIFF....WEBP.
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IMAGE_SIGNATURES = (
    _PNG_SIGNATURE,
    b"\xff\xd8\xff",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
    b"II+\x00",
    b"MM\x00+",
)
_PNG_END = b"IEND\xaeB`\x82"  # a PNG's last chunk, with its CRC
# Decode forward instead of seeking when the requested frame is at most this many frames ahead.
_MAX_FORWARD_SKIP = 64


class FrameReader(Protocol):
    """What datasets need from a reader: metadata, an exact length and frames [C,H,W], RGB (C=3) or RGBA (C=4).

    `read(i)` is frame i as decoded: uint8 in [0, 255] for an 8-bit source (`bit_depth` 8), uint16 in
    [0, 65535] for a deeper one (`bit_depth` 16: 10/12-bit video scaled to the 16-bit range, 16-bit images as
    stored). `reader[i]` is the same frame as float32 in [0, 1], exactly `frame_to_float(reader.read(i))`;
    `read_uint8(i)` is it at 8 bits (a deeper frame rounded to nearest).
    """

    info: VideoInfo
    bit_depth: int

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Tensor: ...

    def read(self, index: int) -> Tensor: ...

    def read_uint8(self, index: int) -> Tensor: ...


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key that orders digit runs by value: '2.png' < '10.png', case-insensitive."""
    parts = re.split(r"(\d+)", name)
    return tuple(int(part) if i % 2 else part.lower() for i, part in enumerate(parts)) + (name,)


def frame_to_float(frame: Tensor) -> Tensor:
    """uint8 [0, 255] or uint16 [0, 65535] frame(s) -> float32 in [0, 1]: value / 255 or / 65535, which
    `float_to_frame` undoes exactly."""
    if frame.dtype not in FULL_SCALE:
        raise ValueError(f"frame must be a uint8 (0-255) or uint16 (0-65535) tensor, got dtype {frame.dtype}")
    return frame.float().div_(FULL_SCALE[frame.dtype])


def float_to_frame(frame: Tensor, dtype: torch.dtype = torch.uint8) -> Tensor:
    """Float frame(s) in [0, 1] -> `dtype` (uint8 or uint16): clamped, scaled, rounded to nearest (half to even)."""
    return frame.clamp(0, 1).mul_(FULL_SCALE[dtype]).round_().to(dtype)


def frame_to_uint8(frame: Tensor) -> Tensor:
    """Float frame(s) in [0, 1] -> uint8 in [0, 255]: clamped, x255, rounded to nearest (half to even)."""
    return float_to_frame(frame, torch.uint8)


def _planes_to_tensor(image: np.ndarray) -> Tensor:
    """OpenCV BGR(A) [H,W,3|4] (uint8 or uint16) -> contiguous RGB(A) tensor [3|4,H,W], values unchanged."""
    # The planes in reverse order: one copy (bench/RESULTS.md times it against cvtColor + permute + contiguous).
    planes = cv2.split(image)
    rgb = planes[2::-1] + planes[3:]
    return torch.from_numpy(np.stack(rgb))


def decode_image(path: str | Path, alpha: bool = False) -> Tensor:
    """One image file as decoded: RGB [3,H,W] (RGBA [4,H,W] with `alpha`), uint8 for an 8-bit image, uint16
    (0-65535) for a 16-bit one; a float image (32-bit TIFF) is clamped to [0, 1] and becomes uint16.

    Raises:
        FileNotFoundError: No such file.
        ValueError: It cannot be decoded, or `alpha` and it has no alpha channel (naming it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    # IMREAD_UNCHANGED keeps the alpha but ignores a JPEG's EXIF orientation; without alpha, ANYCOLOR | ANYDEPTH
    # keeps the depth and applies it (COLOR | ANYDEPTH fails on grey float TIFF in OpenCV 5.0).
    flags = cv2.IMREAD_UNCHANGED if alpha else cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH
    image = cv2.imread(str(path), flags)
    if image is None:
        raise ValueError(f"cannot decode image file {path} (expected png, jpg, bmp, tiff or webp)")
    if image.dtype not in (np.uint8, np.uint16):
        image = np.rint(np.clip(image, 0, 1) * FULL_SCALE[torch.uint16]).astype(np.uint16)
    channels = 1 if image.ndim == 2 else image.shape[2]
    if alpha and channels not in (2, 4):
        raise ValueError(
            f"image file {path} has no alpha channel ({channels} channels); read it with alpha=False"
        )
    if channels <= 2:  # grey (and alpha): the grey plane as R, G and B
        grey = image if channels == 1 else image[..., 0]
        image = cv2.merge([grey, grey, grey] + ([image[..., 1]] if channels == 2 else []))
    if not alpha:
        image = image[..., :3]
    return _planes_to_tensor(image)


def image_file_problem(path: Path) -> str | None:
    """What makes `path` no whole image, from its size and its first and last bytes; None: nothing found.

    Found: an empty file, a start that is no PNG, JPEG, BMP, TIFF or WebP signature, a PNG without its end
    chunk or a WebP shorter than its header says (both cut short). Other damage shows when it is decoded.

    Args:
        path: An image file.

    Returns:
        The problem as the end of a sentence naming the file ("is empty (0 bytes)"), or None.
    """
    size = path.stat().st_size
    if size == 0:
        return "is empty (0 bytes)"
    with path.open("rb") as file:
        head = file.read(12)
        file.seek(max(size - len(_PNG_END), 0))
        tail = file.read()
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        stated = int.from_bytes(head[4:8], "little") + 8
        return (
            None
            if size >= stated
            else f"is cut short: its WebP header gives {stated} bytes, the file has {size}"
        )
    if not head.startswith(_IMAGE_SIGNATURES):
        return "is not an image: its first bytes are no PNG, JPEG, BMP, TIFF or WebP signature"
    if head.startswith(_PNG_SIGNATURE) and tail != _PNG_END:
        return "is cut short: its PNG data ends without the end chunk (IEND)"
    return None


def read_image(path: str | Path) -> Tensor:
    """One image file as float32 RGB [3,H,W] in [0,1]: `frame_to_float(decode_image(path))`."""
    return frame_to_float(decode_image(path))


def read_image_uint8(path: str | Path) -> Tensor:
    """One image file as uint8 RGB [3,H,W] in [0, 255] (alpha dropped, 16-bit rounded to 8-bit)."""
    return to_uint8(decode_image(path))


def to_uint8(frame: Tensor) -> Tensor:
    """A frame as decoded (uint8 or uint16) at 8 bits: uint8 as it is, uint16 rounded to nearest."""
    return frame if frame.dtype == torch.uint8 else frame_to_uint8(frame_to_float(frame))


class _Frames(ABC):
    """The float and 8-bit views and iteration shared by the readers: `reader[i]` is
    `frame_to_float(read(i))`, `read_uint8(i)` is `to_uint8(read(i))`."""

    info: VideoInfo
    bit_depth: int

    @abstractmethod
    def read(self, index: int) -> Tensor:
        """Frame `index` as decoded: RGB(A) [C,H,W], uint8 (`bit_depth` 8) or uint16 (16)."""

    def read_uint8(self, index: int) -> Tensor:
        """Frame `index` as uint8 RGB(A) [C,H,W] in [0, 255]: as decoded, or rounded from a deeper source."""
        return to_uint8(self.read(index))

    def __len__(self) -> int:
        return self.info.num_frames

    def __getitem__(self, index: int) -> Tensor:
        """Frame `index` as float32 RGB(A) [C,H,W] in [0,1]."""
        return frame_to_float(self.read(index))

    def __iter__(self) -> Iterator[Tensor]:
        return (self[i] for i in range(len(self)))


class VideoReader(_Frames):
    """Frames of a video file as RGB tensors [3,H,W] (RGBA [4,H,W] with `alpha`); `len()` is the exact count.

    `reader.read(i)` is frame i as decoded: uint8 in [0, 255] from an 8-bit source (through OpenCV: a
    quarter of float32's bytes, what datasets hand to DataLoader workers), uint16 in [0, 65535] from a source
    of more than 8 bits (10-bit H.264/HEVC, ProRes at 10-12 bits, decoded through PyAV at 16 bits;
    `bit_depth` says which). `reader[i]` is the same frame as float32 in [0,1]. Without PyAV every source is
    read at 8 bits through OpenCV. `alpha=True` reads the source's alpha channel too (ProRes 4444, FFV1 with
    alpha; needs PyAV), as the fourth channel.

    `info` holds the name (file stem unless given), the container's fps as an exact fraction (the average
    rate of a variable-rate file), the size and the number of frames; for a variable-rate file (as phones
    record) also each frame's presentation time (`frame_times`, read from the container's packets with
    PyAV; without the `[av]` extra every file counts as constant-rate). The header's frame count is trusted
    only after reading its last frame: when that fails the last decodable frame is found by a bounded backwards search (exponential steps, then
    bisection); a header without a count costs one full decode. Sequential reads never seek; a request a
    little ahead decodes forward, anything else seeks. The decoder opens lazily, so a reader can be pickled
    into DataLoader workers.

    Args:
        path: The video file.
        name: The video's name; None: the file's stem.
        alpha: Read RGBA [4,H,W]; the source must have an alpha channel.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file is empty, has no decodable frame or no frame rate, two frames of a variable-rate
            file share a timestamp (naming them), or `alpha` and it has no alpha channel or PyAV is missing.

    Example::

        reader = VideoReader("clip.mov")
        print(reader.info.fps, len(reader), reader.bit_depth)
        first = reader[0]  # float32 [3, H, W] in [0, 1]
        decoded = reader.read(0)  # uint8 (8-bit source) or uint16 (deeper) [3, H, W]
    """

    def __init__(self, path: str | Path, name: str | None = None, alpha: bool = False) -> None:
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
        container = _open_with_av(self.path)  # one PyAV open for the timestamps and the pixel format
        try:
            _check_frames_present(container, self.path)
            times = _variable_frame_times(container, self.path, fps, num_frames)
            decoder = _AVDecoder.for_source(container, self.path, fps, times, alpha)
        finally:
            if container is not None:
                container.close()
        if times is not None:  # OpenCV counts a variable-rate file by time at the average rate: short or long
            num_frames = len(times)
            self._half_gap_ms = min(float(b - a) for a, b in zip(times, times[1:], strict=False)) * 500
        self.info = VideoInfo(name or self.path.stem, fps, width, height, num_frames, frame_times=times)
        self.alpha = alpha
        self._decoder: _AVDecoder | None = decoder
        self.bit_depth = 8 if self._decoder is None else self._decoder.bit_depth
        self._capture: cv2.VideoCapture | None = None
        self._next_index: int | None = 0

    def _open(self) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not capture.isOpened():
            raise ValueError(f"cannot decode video file {self.path}: {_why_unopened(self.path)}")
        return capture

    def read(self, index: int) -> Tensor:
        """Frame `index` as decoded: RGB(A) [C,H,W], uint8 in [0, 255] or uint16 in [0, 65535] (`bit_depth`)."""
        if not 0 <= index < len(self):
            raise IndexError(f"frame {index} out of range for {self.path} with {len(self)} frames")
        if self._decoder is not None:
            return torch.from_numpy(self._decoder.read(index)).permute(2, 0, 1).contiguous()
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
        return _planes_to_tensor(frame)

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
        if self._decoder is not None:
            self._decoder.close()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_capture": None, "_next_index": 0}


class _AVDecoder:
    """Frames of a video decoded by PyAV at 16 bits (rgb48le, rgba64le) or, for 8-bit alpha, as rgba, turned
    upright by the display matrix as OpenCV turns them; the container opens lazily and is left out of pickles.
    Sequential reads decode on, anything else seeks; frames are found by timestamp (a variable-rate file's
    `frame_times`, else index / fps)."""

    def __init__(
        self, path: Path, fps: Fraction, frame_times: tuple[Fraction, ...] | None, bit_depth: int, alpha: bool
    ) -> None:
        self.path, self.fps, self.bit_depth, self.alpha = path, fps, bit_depth, alpha
        self.frame_times = frame_times
        deep = bit_depth > 8
        self.format = ("rgba64le" if deep else "rgba") if alpha else "rgb48le"
        self._container: Any = None
        self._frames: Iterator[Any] | None = None
        self._next_index = 0

    @classmethod
    def for_source(
        cls,
        container: Any | None,
        path: Path,
        fps: Fraction,
        frame_times: tuple[Fraction, ...] | None,
        alpha: bool,
    ) -> _AVDecoder | None:
        """The decoder of a source OpenCV would truncate (more than 8 bits) or `alpha`; None: OpenCV's.
        `container`: the source open in PyAV, None without PyAV."""
        if container is None:
            if alpha:
                raise ValueError(
                    f"reading the alpha of {path} needs PyAV: pip install 'lightning-matting[av]'"
                )
            return None
        import av

        components = av.VideoFormat(container.streams.video[0].codec_context.pix_fmt).components
        bits = max(component.bits for component in components)
        if alpha and not any(component.is_alpha for component in components):
            raise ValueError(f"video file {path} has no alpha channel; read it with alpha=False")
        if bits <= 8 and not alpha:
            return None
        return cls(path, fps, frame_times, 16 if bits > 8 else 8, alpha)

    def read(self, index: int) -> np.ndarray:
        """Frame `index` as [H,W,C] RGB(A), uint16 (`bit_depth` 16) or uint8."""
        if self._frames is None or not 0 <= index - self._next_index <= _MAX_FORWARD_SKIP:
            self._seek(index)
        for frame in self._frames:
            position = self._index_of(frame)
            if position >= index:
                self._next_index = position + 1
                if position == index:
                    # rotation: the display matrix's counter-clockwise degrees; OpenCV's frames are turned so
                    return np.ascontiguousarray(
                        np.rot90(frame.to_ndarray(format=self.format), frame.rotation // 90)
                    )
                break
        self._frames = None  # position unknown: the next request seeks
        raise RuntimeError(f"cannot decode frame {index} of {self.path} (PyAV)")

    def _seek(self, index: int) -> None:
        import av

        if self._container is None:
            self._container = av.open(str(self.path))
        stream = self._container.streams.video[0]
        self._start = stream.start_time or 0
        self._time_base = stream.time_base
        target = self._start + round(frame_time(index, self.fps, self.frame_times) / self._time_base)
        self._container.seek(target, stream=stream, backward=True)
        self._frames = self._container.decode(stream)

    def _index_of(self, frame: Any) -> int:
        time = (frame.pts - self._start) * self._time_base
        if self.frame_times is None:
            return round(time * self.fps)
        return bisect.bisect_left(self.frame_times, time - self._time_base)  # within a tick of its time

    def close(self) -> None:
        """Close the container; a later read reopens it."""
        if self._container is not None:
            self._container.close()
        self._container, self._frames = None, None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_container": None, "_frames": None}


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


def _open_with_av(path: Path) -> Any | None:
    """`path` open in PyAV (the caller closes it); None without PyAV."""
    try:
        import av
    except ImportError:
        return None
    return av.open(str(path))


def _check_frames_present(container: Any | None, path: Path) -> None:
    """Refuse a file whose index points past its end (a copy or download cut short, its index at the front).

    The index of an MP4/MOV (its sample table) gives every frame's byte position and size, the cues of a
    Matroska file its keyframes' positions: all of them must lie within the file. Reads only the index.
    `container`: `path` open in PyAV; None (no PyAV): no check.

    Raises:
        ValueError: Frames lie past the end, naming the file, the frames its index claims and those it holds.
    """
    if container is None:
        return
    entries = container.streams.video[0].index_entries
    size = path.stat().st_size
    ends = [entry.pos + entry.size for entry in entries]
    if not ends or max(ends) <= size:
        return
    held = next(index for index, end in enumerate(ends) if end > size)
    frames = "frames" if all(entry.size > 0 for entry in entries) else "keyframes"
    raise ValueError(
        f"video file {path} is cut short: its index claims {len(ends)} {frames} up to byte {max(ends)}, but the "
        f"file ends at byte {size}: the data of only {held} of them is there; copy the file again (or remux "
        "what it holds: ffmpeg -i <file> -c copy <new file>)"
    )


def _variable_frame_times(
    container: Any | None, path: Path, fps: Fraction, num_frames: int
) -> tuple[Fraction, ...] | None:
    """Each frame's time in seconds from the first (one per video packet), for a variable-rate file; None for a
    constant-rate one, whose frames OpenCV counts and seeks exactly.

    Only a file that looks variable-rate has its packets' timestamps read (demuxed, not decoded): its average
    and base rates differ (MP4/MOV compute the average from the timestamps), or its duration is not
    `num_frames / fps` (Matroska, whose average rate is a guess), or it has no duration. `container`: `path`
    open in PyAV; None (no PyAV): None.
    """
    if container is None:
        return None
    import av

    stream = container.streams.video[0]
    if not _looks_variable_rate(container, stream, fps, num_frames):
        return None
    try:
        pts = sorted(packet.pts for packet in container.demux(stream) if packet.pts is not None)
    except av.FFmpegError:
        return None
    time_base = stream.time_base
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
    """Frames of a folder of images, in natural order (2.png before 10.png), as RGB tensors [3,H,W] (RGBA
    [4,H,W] with `alpha`).

    `reader.read(i)` is image i as decoded (see `decode_image`): uint8 for 8-bit images, uint16 in
    [0, 65535] for 16-bit (and float) ones; `bit_depth` (8 or 16) is the first image's. `reader[i]` is the
    same image as float32 in [0,1].

    The fps is the user's (default 30); the size and the sample type are the first image's and every frame
    must match them. Files with other extensions are ignored; see `IMAGE_EXTENSIONS`. Every file is checked
    when the reader opens, by its size and its first and last bytes (see `image_file_problem`); an image that
    fails to decode later raises a ValueError naming the file and its frame.

    Raises:
        FileNotFoundError: The folder does not exist.
        NotADirectoryError: It is a file.
        ValueError: It holds no images, or an image is empty, no image or cut short (naming it and its frame).
    """

    def __init__(
        self,
        folder: str | Path,
        fps: float | str | Fraction = 30,
        name: str | None = None,
        alpha: bool = False,
    ) -> None:
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
        for index, file in enumerate(self.files):
            problem = image_file_problem(file)
            if problem is not None:
                raise ValueError(
                    f"image folder {self.folder}: frame {index}, {file}, {problem}; replace that file"
                )
        self.alpha = alpha
        first = decode_image(self.files[0], alpha)
        self.dtype = first.dtype
        self.bit_depth = 8 if first.dtype == torch.uint8 else 16
        _, height, width = first.shape
        self.info = VideoInfo(name or self.folder.name, to_fraction(fps), width, height, len(self.files))

    def read(self, index: int) -> Tensor:
        """Image `index` as decoded: RGB(A) [C,H,W], uint8 in [0, 255] or uint16 in [0, 65535] (`bit_depth`)."""
        if not 0 <= index < len(self):
            raise IndexError(f"frame {index} out of range for {self.folder} with {len(self)} images")
        try:
            frame = decode_image(self.files[index], self.alpha)
        except ValueError as error:
            raise ValueError(f"image folder {self.folder}, frame {index}: {error}") from error
        if frame.shape[1:] != (self.info.height, self.info.width):
            raise ValueError(
                f"image {self.files[index]} is {frame.shape[2]}x{frame.shape[1]} but the sequence is "
                f"{self.info.width}x{self.info.height} (size of {self.files[0].name})"
            )
        if frame.dtype != self.dtype:
            raise ValueError(
                f"image {self.files[index]} has {8 if frame.dtype == torch.uint8 else 16}-bit samples but the "
                f"sequence has {self.bit_depth}-bit ones (those of {self.files[0].name})"
            )
        return frame


def open_reader(
    path: str | Path, fps: float | str | Fraction = 30, name: str | None = None, alpha: bool = False
) -> VideoReader | ImageSequenceReader:
    """A folder -> ImageSequenceReader at `fps`; anything else -> VideoReader (fps from the container)."""
    path = Path(path)
    if path.is_dir():
        return ImageSequenceReader(path, fps=fps, name=name, alpha=alpha)
    return VideoReader(path, name=name, alpha=alpha)
