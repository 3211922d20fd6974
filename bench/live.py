"""Glass-to-glass latency and sustained frames/s of a live source matted and streamed back out, on loopback.

    python bench/live.py [--sizes 320x180 640x360] [--seconds 10] [--fps 30] [--batch-size 1]
                         [--variant rvm-mobilenetv3]

For each size, with realtime off and on: a sender process streams a moving test pattern as MPEG-TS over
udp://127.0.0.1 at `--fps` for `--seconds`; predict mattes it (`VideoMattingDataModule` on the URL, the
variant with untrained weights: the speed is the same) and streams pha back out through
`LiveStreamCallback` (H.264, zerolatency) to another loopback port. Per run: the frames matted, those left
out by realtime and by the output queue, the sustained frames/s (frames matted over the time from the first
batch to the last) and the latency from each frame's capture (decoded by the reader) to its packets being
sent, p50 and p95. A run stops 5 s after its stream (realtime off, a model slower than the source is
still behind then: its latency grows with the run). The first line names the CPU and its relevant flags (lightning_matting.cpu); each row
gives the 1-minute load average when it ended: on a shared machine the figures move with it.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import warnings

import lightning as L
import numpy as np
import torch

from lightning_matting import MattingModule
from lightning_matting.callbacks import LiveStreamCallback
from lightning_matting.cpu import cpu_info
from lightning_matting.data import LiveSettings, VideoMattingDataModule

SENDER = """
import sys, time, av, numpy as np
url, width, height, fps, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
x = np.arange(width)[None, :, None]
with av.open(url, "w", format="mpegts", options={"flush_packets": "1"}) as output:
    stream = output.add_stream("mpeg2video", rate=fps)
    stream.width, stream.height, stream.pix_fmt, stream.bit_rate = width, height, "yuv420p", 4_000_000
    start = time.perf_counter()
    for i in range(int(seconds * fps)):
        frame = ((x + 4 * i) % 256).astype(np.uint8).repeat(height, 0).repeat(3, 2)
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        video_frame.pts = i
        output.mux(stream.encode(video_frame))
        time.sleep(max(0.0, start + (i + 1) / fps - time.perf_counter()))
    output.mux(stream.encode())
"""


class Enough(Exception):
    """The run's time is up (a model slower than the source, realtime off, would take minutes to catch up)."""


class BatchTimes(L.Callback):
    """When each predict batch ended, and its frames; stops the run at `deadline` (perf_counter seconds)."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.ends: list[float] = []
        self.frames = 0

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.ends.append(time.perf_counter())
        self.frames += len(batch.src)
        if self.ends[-1] > self.deadline:
            raise Enough


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run(variant: str, width: int, height: int, realtime: bool, args: argparse.Namespace) -> str:
    """One measured run, as a table row."""
    source, target = free_udp_port(), free_udp_port()
    url = f"udp://127.0.0.1:{source}?pkt_size=1316"
    sender = subprocess.Popen(
        [sys.executable, "-c", SENDER, url, str(width), str(height), str(args.fps), str(args.seconds)]
    )
    try:
        data = VideoMattingDataModule(
            [f"udp://127.0.0.1:{source}"],
            batch_size=args.batch_size,
            live=LiveSettings(realtime=realtime, timeout=2, reconnects=0),
        )
        streamer = LiveStreamCallback(streams={"pha": f"udp://127.0.0.1:{target}?pkt_size=1316"})
        times = BatchTimes(time.perf_counter() + args.seconds + 5)
        trainer = L.Trainer(
            accelerator="cpu", logger=False, enable_progress_bar=False, callbacks=[streamer, times]
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the stream's end (UDP silence) and Lightning's notes
            try:
                trainer.predict(MattingModule(model=variant), datamodule=data, return_predictions=False)
            except Enough:
                pass
    finally:
        sender.kill()
        sender.wait()
    sink = streamer.sinks["pha"]
    span = times.ends[-1] - times.ends[0] if len(times.ends) > 1 else float("nan")
    sustained = (times.frames - args.batch_size) / span  # frames after the first batch, over their time
    p50, p95 = np.percentile(sink.latencies, [50, 95]) * 1000
    return (
        f"| {width}x{height} | {'on' if realtime else 'off'} | {times.frames} | {data.predict_dataset.dropped} | "
        f"{sink.dropped} | {sustained:.2f} | {p50:.0f} | {p95:.0f} | {os.getloadavg()[0]:.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variant", default="rvm-mobilenetv3")
    parser.add_argument("--sizes", nargs="+", default=["320x180", "640x360"], help="WIDTHxHEIGHT")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of stream per run")
    parser.add_argument("--fps", type=int, default=30, help="the source's frame rate")
    parser.add_argument("--batch-size", type=int, default=1, help="frames per step (at most, with realtime)")
    args = parser.parse_args()
    print(f"CPU: {cpu_info().describe()}, {os.cpu_count()} cores")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads; {args.variant} (untrained), "
        f"batch size {args.batch_size}, a {args.fps} frames/s source for {args.seconds:g} s per run"
    )
    print(
        "| size | realtime | frames matted | left out (realtime) | dropped (output) | sustained frames/s | "
        "capture to sent p50 ms | p95 ms | load average (1 min) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        width, height = (int(v) for v in size.split("x"))
        for realtime in (False, True):
            print(run(args.variant, width, height, realtime, args), flush=True)


if __name__ == "__main__":
    main()
