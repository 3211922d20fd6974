"""Live sources: network streams, standard input and V4L2 cameras, read through PyAV as their frames come.

A live source has no frame count: `LiveFrames` yields batches of consecutive frames until the stream ends. A
reader thread decodes; with `realtime` it keeps only the latest frames when the model falls behind (latency
stays bounded, the frames left out are counted), else it keeps every frame (a bounded buffer: the stream
waits for the model).
"""

from __future__ import annotations

import logging
import re
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset

from lightning_matting.data.batch import LiveFrameInfo, MattingBatch
from lightning_matting.data.datasets import resize_frame
from lightning_matting.data.readers import IMAGE_EXTENSIONS, decode_image, float_to_frame, frame_to_float
from lightning_matting.live_sources import DEVICE, STDIN, check_live_source
from lightning_matting.metadata import VideoInfo
from lightning_matting.validators import check_int, check_number

LIVE_NAME = "live"  # the output folder of a live source
ANALYZE_SECONDS = 1.0  # of the stream's time read to find its streams' parameters before the first frame
_BACKOFF_SECONDS = 0.5  # the first wait before reopening a dropped stream; doubled at each further attempt
CAPTURED_PLATE = re.compile(r"capture:([1-9]\d*)")  # a live source's plate made of its first N frames
_BUFFERED_BATCHES = 4  # realtime=False: batches of decoded frames the reader may hold before the stream waits
_console = logging.getLogger("lightning.pytorch")


def open_live(source: str, timeout: float) -> Any:
    """The PyAV input container of a live source, opened within `timeout` seconds.

    Args:
        source: A URL of `lightning_matting.live_sources.LIVE_SCHEMES`, '-' (standard input: any container FFmpeg reads, such as NUT or
            MPEG-TS) or /dev/videoN.
        timeout: Seconds to wait for the stream to open, and later for each read.

    Raises:
        ValueError: What `check_live_source` refuses, or the stream does not open (naming it and why).
    """
    import av

    check_live_source(source)
    microseconds = str(int(timeout * 1e6))
    # Opening probes the stream for ANALYZE_SECONDS of its time (FFmpeg's default, 5 s, holds a pipe fed frame
    # by frame for 5 s of frames); FFmpeg's own socket timeouts (µs) besides PyAV's interrupt, which a
    # blocked UDP read does not reach
    probe = {"analyzeduration": str(int(ANALYZE_SECONDS * 1e6))}
    options = probe | {"timeout": microseconds, "rw_timeout": microseconds}
    if source.startswith("udp://"):
        options["overrun_nonfatal"] = "1"  # a model behind drops packets instead of failing the stream
    try:
        if source == STDIN:
            container = av.open("pipe:0", "r", options=probe, timeout=timeout)
        elif DEVICE.fullmatch(source):
            container = av.open(source, "r", format="v4l2", timeout=timeout)
        else:
            container = av.open(source, "r", options=options, timeout=(timeout, timeout))
    except (av.FFmpegError, OSError) as error:
        raise ValueError(
            f"source {source!r}: the live stream did not open within {timeout:g} s ({error}); check that a "
            "sender is sending there (or the server is up), or give data.live.timeout more seconds"
        ) from error
    if not container.streams.video:
        container.close()
        raise ValueError(f"source {source!r}: the live stream has no video track")
    return container


@dataclass(frozen=True)
class LiveFrame:
    """One decoded frame: RGB uint8 [3,H,W], the wall clock when decoded (s since the epoch), the stream's
    presentation time (s, NaN when it has none) and its number among the frames decoded (from 0)."""

    rgb: torch.Tensor
    captured: float
    pts: float
    number: int


def live_frame_times(batch: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A live batch's capture times and stream times (`LiveFrames`), or None for a batch of another source.

    Returns:
        (capture_time, pts): float64 [B] each, seconds (the wall clock since the epoch; the stream's time,
        NaN where it has none).
    """
    if isinstance(batch, MattingBatch) and batch.live is not None:
        return batch.live.capture_time, batch.live.pts
    return None


class _FrameBuffer:
    """Decoded frames between the reader thread and the batches: the latest `capacity` (`keep_latest`, the
    older ones dropped and counted) or every frame (the reader waits while `capacity` wait)."""

    def __init__(self, capacity: int, keep_latest: bool):
        self.capacity = capacity
        self.keep_latest = keep_latest
        self.dropped = 0
        self.ended = False
        self.failure: str | None = None  # why the stream stopped, when it did not end
        self._frames: deque[LiveFrame] = deque()
        self._changed = threading.Condition()

    def put(self, frame: LiveFrame) -> bool:
        """Add a frame; False once the consumer stopped."""
        with self._changed:
            if self.keep_latest and len(self._frames) >= self.capacity:
                self._frames.popleft()
                self.dropped += 1
            self._changed.wait_for(lambda: len(self._frames) < self.capacity or self.ended)
            if self.ended:
                return False
            self._frames.append(frame)
            self._changed.notify_all()
            return True

    def take(self, count: int, whole: bool) -> list[LiveFrame]:
        """Up to `count` frames, waiting for one (or, `whole`, for `count`); none: the stream ended."""
        with self._changed:
            self._changed.wait_for(lambda: len(self._frames) >= (count if whole else 1) or self.ended)
            frames = [self._frames.popleft() for _ in range(min(count, len(self._frames)))]
            self._changed.notify_all()
            return frames

    def end(self, failure: str | None = None) -> None:
        """No more frames: the stream ended (or stopped: `failure`), or the consumer is done."""
        with self._changed:
            self.ended = True
            self.failure = self.failure or failure
            self._changed.notify_all()


class LiveFrames(IterableDataset):
    """Batches of consecutive frames of a live source, as they come, until the stream ends.

    Batches are `MattingBatch`es: `src` uint8 [B,3,H,W] RGB, `index` the frames given so far (consecutive from
    0), `video` `name`, and `live` (`LiveFrameInfo`: each frame's number among those decoded, its capture time
    and presentation time, the frames left out so far); with a `background`, `bgr` uint8 [1,3,H,W], the plate
    at the frames' size, static (sent to the device once).
    `realtime`: a batch is the latest frames decoded (1 to `batch_size`), older ones are left out when the
    model falls behind; else every frame, in batches of `batch_size` (the last possibly shorter).

    A stream that ends ends the batches. One that fails mid-stream (a read error, `timeout` seconds of
    silence) is reopened up to `reconnects` times, waiting 0.5 s, 1 s, 2 s ... before each; then the batches
    end with a warning naming the source. The stream is opened here (errors before any work) and decoded by a
    thread while the batches are iterated.

    Args:
        source: A URL of `lightning_matting.live_sources.LIVE_SCHEMES`, '-' (standard input) or /dev/videoN.
        batch_size: Frames per batch (at most).
        resize: (width, height) of the frames; None: the stream's size.
        realtime: Keep only the latest frames when the model falls behind (bounded latency).
        timeout: Seconds to wait for the stream to open and for each read.
        reconnects: Times a failed stream is reopened before the batches end.
        name: The video's name (its output folder).
        background: A still plate for models that need one: an image file, stretched to the frames' size; or
            "capture:N", the per-pixel median of the stream's first N frames (taken before the subject enters;
            those frames are not matted, so `frame` starts at N).

    Raises:
        ValueError: An unknown scheme, a stream that does not open, a background that is not an image file, or
            a setting out of range (naming it).
        TypeError: A timeout or reconnects of the wrong type (naming it).
        FileNotFoundError: A /dev/videoN or a background that does not exist.
    """

    def __init__(
        self,
        source: str,
        batch_size: int = 4,
        resize: tuple[int, int] | None = None,
        realtime: bool = False,
        timeout: float = 5.0,
        reconnects: int = 3,
        name: str = LIVE_NAME,
        background: str | None = None,
    ) -> None:
        timeout = check_number("live_timeout", timeout, above=0)
        capture = CAPTURED_PLATE.fullmatch(background or "")
        if (
            capture is None
            and background is not None
            and Path(background).suffix.lower() not in IMAGE_EXTENSIONS
        ):
            raise ValueError(
                f"backgrounds: a live source takes a still plate, an image file ({', '.join(sorted(IMAGE_EXTENSIONS))}"
                f") or capture:N (the median of the stream's first N frames, N >= 1), got {background!r}"
            )
        plate = None if background is None or capture else decode_image(background)
        self.plate_frames = int(capture[1]) if capture else 0  # capture:N: the first N frames make the plate
        self._frames_of_plate: list[torch.Tensor] = []
        check_int("reconnects", reconnects, minimum=0)
        self.source = source
        self.batch_size = batch_size
        self.realtime = realtime
        self.timeout = timeout
        self.reconnects = reconnects
        self._container = open_live(source, self.timeout)
        stream = self._container.streams.video[0]
        width, height = resize or (stream.codec_context.width, stream.codec_context.height)
        rate = stream.average_rate or stream.guessed_rate or 30
        self.info = VideoInfo(name, Fraction(rate), width, height, 0)
        self._plate = (
            None if plate is None else float_to_frame(resize_frame(frame_to_float(plate), width, height))
        )
        self.delivered = 0  # frames given in batches
        self.dropped = 0  # frames left out (realtime)

    def __iter__(self) -> Iterator[MattingBatch]:
        capacity = self.batch_size if self.realtime else self.batch_size * _BUFFERED_BATCHES
        buffer = _FrameBuffer(capacity, keep_latest=self.realtime)
        reader = threading.Thread(target=self._read, args=(buffer,), name="live-reader", daemon=True)
        reader.start()
        try:
            while frames := buffer.take(self.batch_size, whole=not self.realtime):
                self.dropped = buffer.dropped
                yield self._batch(frames)
                self.delivered += len(frames)
        finally:
            buffer.end()
            reader.join()
            self.dropped = buffer.dropped
        if buffer.failure is not None:
            warnings.warn(
                f"live source {self.source!r} stopped ({buffer.failure}) and did not come back after "
                f"{self.reconnects} reconnect(s); the {self.delivered} frames received are written",
                RuntimeWarning,
                stacklevel=2,
            )
        if self.plate_frames and self._plate is None:
            warnings.warn(
                f"live source {self.source!r} ended before the {self.plate_frames} frames of its plate "
                f"(backgrounds: capture:{self.plate_frames}) came; nothing was matted",
                RuntimeWarning,
                stacklevel=2,
            )
        left_out = f", {self.dropped} left out to keep up (realtime)" if self.realtime else ""
        _console.info(f"live source {self.source}: {self.delivered} frames matted{left_out}")

    def _batch(self, frames: list[LiveFrame]) -> MattingBatch:
        return MattingBatch(
            src=torch.stack([frame.rgb for frame in frames]),
            video=[self.info.name] * len(frames),
            index=torch.arange(self.delivered, self.delivered + len(frames)),
            bgr=None if self._plate is None else self._plate[None],
            static=() if self._plate is None else ("bgr",),
            live=LiveFrameInfo(
                frame=torch.tensor([frame.number for frame in frames]),
                capture_time=torch.tensor([frame.captured for frame in frames], dtype=torch.float64),
                pts=torch.tensor([frame.pts for frame in frames], dtype=torch.float64),
                dropped=self.dropped,
            ),
        )

    def _took_for_plate(self, planes: torch.Tensor) -> bool:
        """Whether this frame goes to the plate (capture:N, until N frames came); the Nth makes it: the median
        of each pixel, which a passing shadow or a few noisy frames do not shift as they shift a mean."""
        if self.plate_frames == 0 or self._plate is not None:
            return False
        self._frames_of_plate.append(planes)
        if len(self._frames_of_plate) == self.plate_frames:
            self._plate = torch.stack(self._frames_of_plate).median(dim=0).values
            self._frames_of_plate = []
            _console.info(
                f"live source {self.source}: background plate taken as the median of its first "
                f"{self.plate_frames} frames (not matted)"
            )
        return True

    def _read(self, buffer: _FrameBuffer) -> None:
        """The reader thread: decode into `buffer`, reopening a failed stream up to `reconnects` times."""
        import av

        container, number, attempts = self._container, 0, 0
        try:
            while not buffer.ended:
                try:
                    if container is None:
                        container = open_live(self.source, self.timeout)
                    for frame in container.decode(video=0):
                        captured = time.time()
                        rgb = frame.to_ndarray(format="rgb24", width=self.info.width, height=self.info.height)
                        pts = float(frame.time) if frame.time is not None else float("nan")
                        planes = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
                        if not self._took_for_plate(planes) and not buffer.put(
                            LiveFrame(planes, captured, pts, number)
                        ):
                            return
                        number, attempts = number + 1, 0  # a frame came: the stream is up
                    buffer.end()  # the stream ended
                    return
                except (av.FFmpegError, OSError, ValueError) as error:
                    if container is not None:
                        container.close()
                        container = None
                    if attempts >= self.reconnects:
                        buffer.end(failure=str(error))
                        return
                    time.sleep(_BACKOFF_SECONDS * 2**attempts)
                    attempts += 1
        finally:
            if container is not None:
                container.close()
            self._container = None
