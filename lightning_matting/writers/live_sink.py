"""LiveSink: frames sent as a low-latency live stream (a URL, standard output or a V4L2 loopback device).

Frames are queued without waiting: a sender thread encodes them (H.264 through libx264 with
tune=zerolatency, no B-frames and a keyframe every half second; MPEG-4 Part 2 where this FFmpeg lacks
libx264) and muxes them as MPEG-TS (udp://, tcp://, srt://, standard output) or FLV (rtmp://); a
/dev/videoN gets raw YUV 4:2:0 frames. When the receiver or the network cannot keep up, the oldest queued
frames are dropped and counted, so the caller never waits for the stream.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections import deque
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .pyav import _import_av, has_encoder

SINK_FORMATS = {"udp": "mpegts", "tcp": "mpegts", "srt": "mpegts", "rtmp": "flv"}  # container per scheme
STDOUT = "-"
DEVICE = re.compile(r"/dev/video\d+")
ENCODERS = ("libx264", "mpeg4")  # the first this FFmpeg has encodes the stream
_ENCODER_OPTIONS = {
    "libx264": {"preset": "ultrafast", "tune": "zerolatency", "bf": "0"},
    "mpeg4": {"bf": "0", "qscale": "4"},
}
_EACH_PACKET = {"flush_packets": "1"}  # each frame leaves at once, not when FFmpeg's 32 KiB buffer is full
_TIME_BASE = Fraction(1, 90000)  # MPEG-TS's clock: pts are sent at this resolution


def check_sink_url(url: object, what: str) -> str:
    """Refuse a stream target that cannot be one whatever the network does: a scheme other than
    `SINK_FORMATS`, a path other than '-' and /dev/videoN, a device that does not exist.

    Args:
        url: The stream target.
        what: How the message names it, such as "LiveStreamCallback: streams['pha']".

    Returns:
        `url`.

    Raises:
        ValueError: Anything but a str URL of `SINK_FORMATS`, '-' or /dev/videoN, naming it.
        FileNotFoundError: A /dev/videoN that does not exist.
    """
    schemes = ", ".join(f"{scheme}://" for scheme in SINK_FORMATS)
    if isinstance(url, str) and "://" in url:
        scheme = url.split("://", 1)[0].lower()
        if scheme in SINK_FORMATS:
            return url
        problem = f"is a URL of the unknown scheme {scheme!r}"
    elif url == STDOUT or (isinstance(url, str) and DEVICE.fullmatch(url)):
        if url != STDOUT and not Path(url).exists():
            raise FileNotFoundError(
                f"{what} = {url!r}: no such video device; a V4L2 loopback device (/dev/videoN, made by the "
                "v4l2loopback kernel module) must exist before it is streamed to"
            )
        return url
    else:
        problem = "is not a stream target"
    raise ValueError(
        f"{what} = {url!r} {problem}: a live output is a URL of {schemes} (MPEG-TS; FLV for rtmp://), "
        "'-' (standard output, MPEG-TS) or /dev/videoN (a V4L2 loopback device)"
    )


class LiveSink:
    """One live output stream: `send` queues a frame and returns at once; `close` ends the stream.

    With `size`, the stream starts here (a URL that does not connect within `timeout` is an error before
    any frame); without, at the first frame, on the sender thread (a failure is then in `failure`). The
    stream's size is rounded down to even; frames of another size are scaled to it. Standard output ('-')
    is taken by the stream: from here on, whatever else the process writes to standard output goes to
    standard error.

    Args:
        url: A URL of `SINK_FORMATS`, '-' (standard output) or /dev/videoN.
        rate: Frames per second the encoder is told (its rate control and keyframe interval).
        size: (width, height) of the frames, pixels; None: the first frame's.
        queue_size: Frames that may wait for the sender; a further frame drops the oldest.
        timeout: Seconds the stream may take to open, and each write (a receiver that stops reading stops the
            stream: TCP's own timeout, a write still blocked at `close` left behind).
        what: How messages name the stream, such as "LiveStreamCallback: streams['pha']".

    Raises:
        ValueError: What `check_sink_url` refuses, or the stream does not open (naming the URL and why).
        FileNotFoundError: A /dev/videoN that does not exist.
    """

    def __init__(
        self,
        url: str,
        rate: Fraction,
        size: tuple[int, int] | None = None,
        queue_size: int = 4,
        timeout: float = 5.0,
        what: str = "",
    ):
        self.what = what or "stream"
        self.url = check_sink_url(url, self.what)
        self.rate = Fraction(rate)
        self.queue_size = queue_size
        self.encoder = next((name for name in ENCODERS if has_encoder(_import_av(), name)), ENCODERS[-1])
        self.sent = 0  # frames muxed into the stream
        self.dropped = 0  # frames left out: the queue was full, or the stream had stopped
        self.latencies: list[float] = []  # capture -> sent, seconds, of each sent frame with a capture time
        self.failure: str | None = None  # why the stream stopped before `close`
        self.timeout = timeout
        self._container = self._open()
        self._stream: Any = None if size is None else self._start(*size)
        self._last_pts = -1
        self._queue: deque[tuple[np.ndarray, float, float | None]] = deque()
        self.closed = False
        self._changed = threading.Condition()
        self._sender = threading.Thread(target=self._send_queued, name=f"LiveSink({url})", daemon=True)
        self._sender.start()

    def _open(self) -> Any:
        av = _import_av()
        timeout = self.timeout
        try:
            if self.url == STDOUT:
                sys.stdout.flush()
                stream_fd = os.dup(1)
                os.dup2(2, 1)  # the stream owns standard output; print() and logs go to standard error
                return av.open(
                    os.fdopen(stream_fd, "wb", buffering=0), "w", format="mpegts", options=_EACH_PACKET
                )
            if DEVICE.fullmatch(self.url):
                return av.open(self.url, "w", format="v4l2")
            scheme = self.url.split("://", 1)[0].lower()
            url = self.url
            if scheme == "tcp" and "timeout=" not in url:  # TCP's own write timeout (µs); PyAV's is for reads
                url += f"{'&' if '?' in url else '?'}timeout={int(timeout * 1e6)}"
            return av.open(
                url, "w", format=SINK_FORMATS[scheme], options=_EACH_PACKET, timeout=(timeout, timeout)
            )
        except (av.FFmpegError, OSError) as error:
            raise self._refusal(error) from error

    def _refusal(self, error: Exception) -> ValueError:
        return ValueError(
            f"{self.what} = {self.url!r}: the live output did not open within {self.timeout:g} s ({error}); "
            "check that a receiver listens there (tcp://, srt:// and rtmp:// connect to one) and that the "
            "host and port are right"
        )

    def _start(self, width: int, height: int) -> Any:
        """Add the video stream and start the container (which connects); a refusal names the URL."""
        av = _import_av()
        stream = self._add_stream(width // 2 * 2, height // 2 * 2)
        try:
            self._container.start_encoding()
        except (av.FFmpegError, OSError) as error:
            self._container.close()
            raise self._refusal(error) from error
        return stream

    def send(self, frame: np.ndarray, pts: float, captured: float | None = None) -> None:
        """Queue one frame without waiting; the oldest queued one is dropped when `queue_size` wait.

        Args:
            frame: uint8 [H,W,3] RGB or [H,W,1] grey.
            pts: Its presentation time, seconds (the source's); a time not after the previous frame's is
                moved just after it.
            captured: When its source frame was captured (s since the epoch), for `latencies`; None: unknown.
        """
        with self._changed:
            if self.failure is not None or self.closed:
                self.dropped += 1
                return
            if len(self._queue) >= self.queue_size:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append((frame, pts, captured))
            self._changed.notify_all()

    def _send_queued(self) -> None:
        """The sender thread: encode and mux the queued frames until `close`, or until the stream fails."""
        av = _import_av()
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._queue or self.closed)
                if not self._queue:
                    return
                frame, pts, captured = self._queue.popleft()
            try:
                self._mux(frame, pts)
            except (av.FFmpegError, OSError, ValueError) as error:
                with self._changed:
                    self.failure = str(error)
                    self.dropped += 1 + len(self._queue)
                    self._queue.clear()
                return
            self.sent += 1
            if captured is not None:
                self.latencies.append(time.time() - captured)

    def _mux(self, frame: np.ndarray, pts: float) -> None:
        av = _import_av()
        if self._stream is None:
            self._stream = self._start(frame.shape[1], frame.shape[0])
        planes = frame[..., 0] if frame.shape[-1] == 1 else frame
        video_frame = av.VideoFrame.from_ndarray(
            np.ascontiguousarray(planes), format="gray" if frame.shape[-1] == 1 else "rgb24"
        )
        self._last_pts = max(round(pts / _TIME_BASE), self._last_pts + 1)
        video_frame.pts, video_frame.time_base = self._last_pts, _TIME_BASE
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)

    def _add_stream(self, width: int, height: int) -> Any:
        if DEVICE.fullmatch(self.url):
            stream = self._container.add_stream("rawvideo", rate=self.rate)
        else:
            keyframes = str(max(1, round(self.rate / 2)))  # a receiver that joins waits at most 0.5 s
            options = _ENCODER_OPTIONS[self.encoder] | {"g": keyframes}
            stream = self._container.add_stream(self.encoder, rate=self.rate, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = _TIME_BASE
        stream.time_base = _TIME_BASE
        return stream

    def close(self) -> None:
        """Send the queued frames, flush the encoder and end the stream (idempotent); a failure is kept in
        `failure`, never raised."""
        av = _import_av()
        with self._changed:
            if self.closed:
                return
            self.closed = True
            self._changed.notify_all()
        self._sender.join(self.timeout + 1)
        if self._sender.is_alive():  # blocked in a write that no timeout of this protocol ends
            self.failure = (
                self.failure or f"a write blocked for over {self.timeout:g} s (the receiver stopped reading)"
            )
            return
        try:
            if self._stream is not None and self.failure is None:
                for packet in self._stream.encode():
                    self._container.mux(packet)
        except (av.FFmpegError, OSError, ValueError) as error:
            self.failure = str(error)
        finally:
            try:
                self._container.close()
            except (av.FFmpegError, OSError) as error:
                self.failure = self.failure or str(error)

    def summary(self) -> str:
        """One line: frames sent and dropped, the capture -> sent latency (p50, p95) and how it stopped."""
        line = f"{self.what} -> {self.url}: {self.sent} frames sent ({self.encoder}), {self.dropped} dropped"
        if self.latencies:
            p50, p95 = np.percentile(self.latencies, [50, 95]) * 1000
            line += f"; capture to sent {p50:.0f} ms (p50), {p95:.0f} ms (p95)"
        return line + (f"; the stream stopped: {self.failure}" if self.failure else "")
