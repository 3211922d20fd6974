"""Live sources on loopback: a PyAV sender streams a test pattern (grey level = frame number) that is matted as
it comes; the stream's end, realtime drops, unreachable sources and standard input through the command."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import cv2
import lightning as L
import numpy as np
import pytest
import torch
from torch import nn

from lightning_matting import MattingModule
from lightning_matting.callbacks import VideoWriterCallback
from lightning_matting.data.datamodule import VideoMattingDataModule
from lightning_matting.data.settings import LiveSettings
from lightning_matting.matte_command import expand_inputs
from tests.conftest import read_video

ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT, FPS, STEP = 64, 48, 15, 8  # frame i has grey level STEP * i


class MeanMatte(nn.Module):
    def forward(self, src: torch.Tensor, bgr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return src.mean(1, keepdim=True), src


class SlowSteps(L.Callback):
    """A model that falls behind: `seconds` more per batch; records each batch's latency (now - capture)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.latencies: list[float] = []
        self.dropped: list[int] = []

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        time.sleep(self.seconds)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.latencies.append(time.time() - float(batch.live.capture_time[0]))
        self.dropped.append(batch.live.dropped)


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def send_pattern(target: object, frames: int, container_format: str, delay: float = 0.0) -> None:
    """Encode `frames` grey frames (level STEP * i) at FPS, in real time, each sent as it is made, to a URL or a
    writable file (left open)."""
    time.sleep(delay)
    with av.open(target, "w", format=container_format, options={"flush_packets": "1"}) as output:
        stream = output.add_stream("mpeg2video", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(
                np.full((HEIGHT, WIDTH, 3), STEP * i, np.uint8), format="rgb24"
            )
            frame.pts = i
            output.mux(stream.encode(frame))
            time.sleep(1 / FPS)
        output.mux(stream.encode())


def udp_sender(frames: int) -> tuple[str, threading.Thread]:
    port = free_port()
    sender = threading.Thread(
        target=send_pattern,
        args=(f"udp://127.0.0.1:{port}?pkt_size=1316", frames, "mpegts", 0.5),
        daemon=True,
    )
    sender.start()
    return f"udp://127.0.0.1:{port}", sender


def plate(tmp_path: Path) -> str:
    path = tmp_path / "plate.png"
    cv2.imwrite(str(path), np.zeros((HEIGHT, WIDTH, 3), np.uint8))
    return str(path)


def predict(tmp_path: Path, data: VideoMattingDataModule, *callbacks: L.Callback) -> VideoWriterCallback:
    writer = VideoWriterCallback(tmp_path / "out", outputs=["pha"])
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, callbacks=[writer, *callbacks]
    )
    trainer.predict(MattingModule(MeanMatte()), datamodule=data, return_predictions=False)
    return writer


def levels(path: Path) -> np.ndarray:
    """Each frame's frame number, from its mean grey level."""
    frames, _, _, _ = read_video(path)
    return np.rint(frames.mean(axis=(1, 2, 3)) / STEP).astype(int)


def test_a_udp_stream_is_matted_in_order_and_ends_when_the_sender_stops(tmp_path):
    source, sender = udp_sender(30)
    data = VideoMattingDataModule(
        [source], backgrounds=[plate(tmp_path)], batch_size=2, live=LiveSettings(timeout=1, reconnects=1)
    )
    started = time.monotonic()
    with pytest.warns(
        RuntimeWarning, match=r"stopped .* did not come back after 1 reconnect\(s\); the \d+ frames"
    ):
        writer = predict(tmp_path, data)
    sender.join()
    assert time.monotonic() - started < 15  # 2 s of stream, 1 s of silence, one reopen that times out
    numbers = levels(writer.written["live"]["pha"])
    assert len(numbers) == data.predict_dataset.delivered >= 25  # UDP may lose the first packets
    assert np.all(np.diff(numbers) == 1)  # every frame received, in order
    assert data.predict_dataset.dropped == 0
    _, fps, _, _ = read_video(writer.written["live"]["pha"])
    assert fps == pytest.approx(FPS)  # the stream's rate, not the writer's default


def test_realtime_keeps_the_latest_frames_and_counts_those_left_out(tmp_path):
    source, sender = udp_sender(30)
    data = VideoMattingDataModule(
        [source],
        backgrounds=[plate(tmp_path)],
        batch_size=2,
        live=LiveSettings(realtime=True, timeout=1, reconnects=0),
    )
    slow = SlowSteps(0.4)  # 2 frames per 0.4 s: 5 frames/s of 15
    with pytest.warns(RuntimeWarning, match="did not come back"):
        writer = predict(tmp_path, data, slow)
    sender.join()
    numbers = levels(writer.written["live"]["pha"])
    dropped = data.predict_dataset.dropped
    assert dropped >= 10 and len(numbers) + dropped >= 25
    assert np.all(np.diff(numbers) >= 1) and np.any(np.diff(numbers) > 1)  # in order, with gaps
    assert slow.dropped == sorted(slow.dropped) and slow.dropped[-1] <= dropped
    assert max(slow.latencies) < 1.5  # at most 2 frames wait: the latency does not grow with the stream


def test_an_unreachable_url_is_a_clear_error_within_seconds(tmp_path):
    port = free_port(socket.SOCK_STREAM)  # nothing listens there
    for source in (f"tcp://127.0.0.1:{port}", f"udp://127.0.0.1:{free_port()}"):
        data = VideoMattingDataModule([source], live=LiveSettings(timeout=1))
        started = time.monotonic()
        with pytest.raises(ValueError, match=rf"source '{source}': the live stream did not open within 1 s"):
            data.setup("predict")
        assert time.monotonic() - started < 5


def test_live_sources_refused_before_opening(tmp_path):
    with pytest.raises(ValueError, match=r"source 'ftp://127.0.0.1/a' is a URL of the unknown scheme 'ftp'"):
        VideoMattingDataModule(["ftp://127.0.0.1/a"])
    with pytest.raises(FileNotFoundError, match=r"source '/dev/video987': no such video device"):
        VideoMattingDataModule(["/dev/video987"])
    with pytest.raises(ValueError, match=r"the live source 'udp://127.0.0.1:9' is predicted alone"):
        VideoMattingDataModule(["udp://127.0.0.1:9", "clip.mp4"], backgrounds=[None, None])


def test_matte_takes_live_inputs_as_they_are():
    live = ["udp://127.0.0.1:9000?fifo_size=[1]", "-", "/dev/video0"]
    assert expand_inputs(live) == live


def test_standard_input_fed_frame_by_frame_is_matted_as_it_comes_and_streamed_to_standard_output(tmp_path):
    model = tmp_path / "mean_matte.pt"
    torch.jit.save(torch.jit.script(MeanMatte()), str(model))
    command = [sys.executable, "-m", "lightning_matting.cli", "matte", "-", f"--model={model}"]
    command += ["--checkpoint=none", f"--background={plate(tmp_path)}", f"--output={tmp_path / 'out'}"]
    command += ["--outputs=pha", "--devices=1", "--batch-size=2", "--stream=pha=-"]
    with (tmp_path / "stderr.txt").open("wb") as stderr:  # a file: a full stderr pipe would stall the command
        process = subprocess.Popen(  # bufsize=0: each frame reaches the pipe as it is written
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, cwd=ROOT, bufsize=0
        )
    received: list[int] = []

    def receive() -> None:
        with av.open(process.stdout, "r", format="mpegts", options={"analyzeduration": "300000"}) as stream:
            received.extend(
                int(np.rint(f.to_ndarray(format="gray").mean() / STEP)) for f in stream.decode(video=0)
            )

    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    try:
        send_pattern(process.stdin, 20, "nut")  # frame by frame, the pipe left open
        deadline = time.monotonic() + 30
        while len(received) < 5 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert len(received) >= 5  # matted and streamed before the input ends: the probe waits for 1 s of it
        process.stdin.close()
        process.wait(60)
    finally:
        process.kill()
    receiver.join(10)
    assert process.returncode == 0, (tmp_path / "stderr.txt").read_text()[-3000:]
    assert list(levels(tmp_path / "out" / "live" / "pha.mp4")) == list(range(20))  # a pipe loses nothing
    assert received == sorted(set(received)) and set(received) <= set(range(20))  # in order (some dropped
    # when the first second's frames come at once: the stream keeps the latest)
