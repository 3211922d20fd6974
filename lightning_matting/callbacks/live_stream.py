"""LiveStreamCallback: streams predict's outputs live (to URLs, standard output or V4L2 loopback devices)."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

import lightning as L

from lightning_matting.callbacks.settings import check_count, check_writable_names
from lightning_matting.callbacks.step_frames import step_runs
from lightning_matting.data.live import live_frame_times
from lightning_matting.protocols import LiveVideoSource, PredictVideoModule, PredictVideoSource
from lightning_matting.validators import check_number
from lightning_matting.writers.frames import to_hwc
from lightning_matting.writers.live_sink import LiveSink, check_sink_url

_console = logging.getLogger("lightning.pytorch")  # Lightning's console messages, shown at INFO
_DEFAULT_RATE = Fraction(30)  # frames/s of a source that gives none


class LiveStreamCallback(L.Callback):
    """Streams outputs of predict as they are computed, each to its own live stream, beside any file writer.

    Each frame is sent with its source frame's time: a live source's stream time (`pts`; its capture time
    where the stream has none), else consecutive times at the video's frame rate. A stream is opened at
    setup (one that does not open is refused there, naming its URL; with a datamodule that gives no frame
    size, such as a plain DataLoader, at the first frame, a failure then said at the end) and sent by its own thread behind a
    queue of `queue_size` frames: when the receiver or the network falls behind, the oldest frames are
    dropped, never the model slowed. At the end (or on an exception, SIGTERM or Ctrl-C) every stream is
    ended cleanly and one line per stream gives the frames sent and dropped and the capture -> sent latency
    (`lightning_matting.writers.live_sink.LiveSink`).

    Args:
        streams: {output: target}: an output of the step (for MattingModule com, pha, fgr, err, ref, seg) and
            where it goes: udp://, tcp://, srt:// (MPEG-TS), rtmp:// (FLV), '-' (standard output, MPEG-TS) or
            /dev/videoN (a V4L2 loopback device). Encoded as H.264 (libx264, tune=zerolatency, no B-frames,
            a keyframe every half second; MPEG-4 Part 2 without libx264), 4:2:0 at an even size.
        queue_size: Frames that may wait per stream before the oldest is dropped.
        timeout: Seconds a stream may take to open, and to take each write.

    Raises:
        ValueError: A target of another kind or scheme, or a setting out of range, naming it.
        FileNotFoundError: A /dev/videoN that does not exist.

    Example:
        >>> LiveStreamCallback(streams={"pha": "udp://127.0.0.1:9000"}).streams
        {'pha': 'udp://127.0.0.1:9000'}
    """

    def __init__(self, streams: Mapping[str, str], queue_size: int = 4, timeout: float = 5.0) -> None:
        if not isinstance(streams, Mapping) or not streams:
            raise ValueError(
                "LiveStreamCallback: streams must be a non-empty mapping {output: URL}, such as "
                f"{{'pha': 'udp://127.0.0.1:9000'}}; got {streams!r}"
            )
        check_writable_names(list(streams))
        self.streams = {
            name: check_sink_url(url, f"LiveStreamCallback: streams[{name!r}]")
            for name, url in streams.items()
        }
        self.queue_size = check_count("queue_size", queue_size, 1)
        self.timeout = check_number("timeout", timeout, above=0)
        self.sinks: dict[str, LiveSink] = {}  # the streams of the current (or last) predict run
        self._rate = _DEFAULT_RATE
        self._frames = 0  # frames sent per stream so far: the times of a source without its own
        self._first_capture: float | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "predict":
            return
        if isinstance(pl_module, PredictVideoModule):
            pl_module.request_outputs(list(self.streams))
        self._rate, size = _source_rate_and_size(trainer.datamodule)
        self._frames, self._first_capture = 0, None
        self.sinks = {}
        try:
            for name, url in self.streams.items():
                what = f"LiveStreamCallback: streams[{name!r}]"
                self.sinks[name] = LiveSink(url, self._rate, size, self.queue_size, self.timeout, what)
        except Exception:
            self._end_streams()
            raise

    def on_predict_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        samples: dict[str, list] = {name: [] for name in self.streams}  # uint8 [H,W,C] frames, in order
        for run in step_runs(outputs, batch, list(self.streams)):
            for name, tensor in run.frames.items():
                samples[name] += list(to_hwc(tensor[:, :3], "rgb", "uint8").cpu().numpy())  # RGB or grey
        count = len(samples[next(iter(self.streams))])
        times = self._times(batch, count)
        for name, sink in self.sinks.items():
            for frame, (pts, captured) in zip(samples[name], times, strict=True):
                sink.send(frame, pts, captured)
        self._frames += count

    def _times(self, batch: Any, count: int) -> list[tuple[float, float | None]]:
        """(pts, capture time) of each of the batch's `count` frames, seconds."""
        live = live_frame_times(batch)
        if live is None or len(live[0]) != count:
            return [((self._frames + i) / self._rate, None) for i in range(count)]
        times = []
        for captured, pts in zip(live[0].tolist(), live[1].tolist(), strict=True):
            if self._first_capture is None:
                self._first_capture = captured
            times.append((captured - self._first_capture if math.isnan(pts) else pts, captured))
        return times

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end_streams()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._end_streams()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._end_streams()

    def _end_streams(self) -> None:
        """End every open stream, each said in one line (a stream that stopped early, as a warning)."""
        for sink in self.sinks.values():
            if sink.closed:
                continue
            sink.close()
            (_console.warning if sink.failure else _console.info)(sink.summary())


def _source_rate_and_size(datamodule: Any) -> tuple[Fraction, tuple[int, int] | None]:
    """The frame rate and (width, height) of what is predicted: the live source's, else the first video's,
    else 30 frames/s and the first frame's size (None)."""
    info = None
    if isinstance(datamodule, LiveVideoSource) and datamodule.live_video is not None:
        info = datamodule.live_video
    elif isinstance(datamodule, PredictVideoSource) and datamodule.videos:
        info = datamodule.videos[0]
    return (_DEFAULT_RATE, None) if info is None else (Fraction(info.fps), (info.width, info.height))
