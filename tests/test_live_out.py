"""Live outputs on loopback: a PyAV sender streams a test pattern (grey level = frame number), predict mattes it
and streams `pha` to a receiver on another port, the files written alongside; TCP listening input, a sender
killed mid-stream, SIGTERM, a plate captured from the stream, and targets refused by name."""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import lightning as L
import numpy as np
import pytest
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_matting import MattingModule
from lightning_matting.callbacks import LiveStreamCallback, VideoWriterCallback
from lightning_matting.cli import main, run_cli
from lightning_matting.data import LiveSettings, VideoMattingDataModule
from lightning_matting.matte_command import parse_streams, predict_config
from lightning_matting.presets import presets
from lightning_matting.writers import LiveSink
from tests.test_live import FPS, HEIGHT, STEP, WIDTH, MeanMatte, free_port, levels, plate, send_pattern

ROOT = Path(__file__).resolve().parents[1]
SENDER = f"""
import sys, time, av, numpy as np
with av.open(sys.argv[1], "w", format="mpegts") as output:
    stream = output.add_stream("mpeg2video", rate={FPS})
    stream.width, stream.height, stream.pix_fmt = {WIDTH}, {HEIGHT}, "yuv420p"
    for i in range(int(sys.argv[2])):
        frame = av.VideoFrame.from_ndarray(np.full(({HEIGHT}, {WIDTH}, 3), {STEP} * (i % 32), np.uint8), format="rgb24")
        frame.pts = i
        output.mux(stream.encode(frame))
        time.sleep(1 / {FPS})
"""


class Receiver:
    """Decodes a live stream on a thread: each frame's mean grey level / STEP and its time (s)."""

    def __init__(self, url: str, timeout: float | tuple[float, float] = 4.0):
        self.levels: list[int] = []
        self.times: list[float] = []
        self._thread = threading.Thread(target=self._receive, args=(url, timeout), daemon=True)
        self._thread.start()
        time.sleep(0.2)  # listening before anything is sent

    def _receive(self, url: str, timeout: float) -> None:
        try:
            with av.open(url, "r", timeout=timeout, options={"analyzeduration": "300000"}) as stream:
                for frame in stream.decode(video=0):
                    self.levels.append(int(np.rint(frame.to_ndarray(format="gray").mean() / STEP)))
                    self.times.append(float(frame.time))
        except av.FFmpegError:  # UDP: the silence after the last frame
            pass

    def join(self) -> None:
        self._thread.join(15)
        assert not self._thread.is_alive()


class Brightness(L.LightningModule):
    def predict_step(self, batch, batch_idx):
        return {"pha": batch.src.mean(1, keepdim=True)}


def kill_after(receiver: Receiver, frames: int, process: subprocess.Popen) -> None:
    """Kill `process` (SIGKILL) once `receiver` got `frames` frames."""

    def watch() -> None:
        for _ in range(600):
            if len(receiver.levels) >= frames:
                break
            time.sleep(0.05)
        process.kill()

    threading.Thread(target=watch, daemon=True).start()


def start_sender(url: str, frames: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SENDER, url, str(frames)], stderr=subprocess.PIPE)


def scripted_model(tmp_path: Path) -> str:
    path = tmp_path / "mean_matte.pt"
    torch.jit.save(torch.jit.script(MeanMatte()), str(path))
    return str(path)


def test_matte_streams_pha_beside_the_files_and_stops_cleanly_when_the_sender_is_killed(tmp_path, caplog):
    source, target = free_port(), free_port()
    receiver = Receiver(f"udp://127.0.0.1:{target}")
    sender = start_sender(f"udp://127.0.0.1:{source}?pkt_size=1316", 1000)
    kill_after(receiver, 12, sender)  # killed mid-stream: silence, then reopen attempts
    caplog.set_level(logging.INFO, logger="lightning.pytorch")
    with pytest.warns(RuntimeWarning, match=r"stopped .* did not come back after 1 reconnect\(s\)"):
        config = predict_config(
            [f"udp://127.0.0.1:{source}"],
            scripted_model(tmp_path),
            checkpoint=None,
            backgrounds=[plate(tmp_path)],
            output=str(tmp_path / "out"),
            outputs=["pha"],
            batch_size=2,
            streams={"pha": f"udp://127.0.0.1:{target}?pkt_size=1316"},
        )
        config["predict"]["data"] |= {"live": {"timeout": 1, "reconnects": 1}}  # matte's run, stopping sooner
        config["predict"]["trainer"]["callbacks"][1]["init_args"]["queue_size"] = 64  # the start's burst
        cli = run_cli(config)
    written = cli.trainer.callbacks[0].written
    sender.wait(5)
    receiver.join()
    recorded = list(levels(written["live"]["pha"]))
    assert len(recorded) >= 12 and np.all(np.diff(recorded) % 32 == 1)  # matted: pha is the source's grey
    assert receiver.levels == recorded  # every frame recorded was sent, in order
    assert np.all(np.diff(receiver.times) > 0)
    np.testing.assert_allclose(np.diff(receiver.times), 1 / FPS, atol=2e-3)  # the source's times kept
    assert f"-> udp://127.0.0.1:{target}?pkt_size=1316: {len(recorded)} frames sent (libx264), 0 dropped" in (
        caplog.text
    )


def test_the_live_preset_streams_from_a_tcp_listener_to_a_tcp_receiver(tmp_path):
    """The packaged `--config live`, its addresses, model and outputs pointed at the test's."""
    source, target = free_port(), free_port()
    receiver = Receiver(f"tcp://127.0.0.1:{target}?listen=1", timeout=20)
    config = yaml.safe_load(presets()["live"].read_text())
    files, stream = config["trainer"]["callbacks"]
    files["init_args"] |= {"output_dir": str(tmp_path / "out"), "outputs": ["pha"]}
    stream["init_args"] |= {"streams": {"pha": f"tcp://127.0.0.1:{target}"}, "queue_size": 64}
    config["trainer"]["accelerator"] = "cpu"
    config["model"] = {"model": scripted_model(tmp_path), "checkpoint": None}
    config["data"] |= {"sources": [f"tcp://127.0.0.1:{source}?listen=1"], "backgrounds": [plate(tmp_path)]}
    config["data"] |= {"batch_size": 2, "live": {"realtime": False, "timeout": 20}}  # every frame
    (tmp_path / "live.yaml").write_text(yaml.safe_dump(config))

    def connect_and_send() -> None:  # the sender connects once predict listens
        for _ in range(100):
            try:
                send_pattern(f"tcp://127.0.0.1:{source}", 20, "mpegts")
                return
            except av.FFmpegError:
                time.sleep(0.1)

    sender = threading.Thread(target=connect_and_send, daemon=True)
    sender.start()
    main(["predict", "--config", str(tmp_path / "live.yaml")])
    sender.join(10)
    receiver.join()
    assert list(levels(tmp_path / "out" / "live" / "pha.mp4")) == list(range(20))  # TCP loses nothing
    assert receiver.levels == list(range(20)) and np.all(np.diff(receiver.times) > 0)


def test_sigterm_mid_stream_ends_the_stream_finalizes_the_files_and_exits_with_1(tmp_path):
    source, target = free_port(), free_port()
    receiver = Receiver(f"udp://127.0.0.1:{target}", timeout=(60, 2))  # the command takes seconds to start
    sender = start_sender(f"udp://127.0.0.1:{source}?pkt_size=1316", 1000)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "lightning_matting.cli", "matte", f"udp://127.0.0.1:{source}"]
    command += [f"--model={scripted_model(tmp_path)}", "--checkpoint=none", f"--background={plate(tmp_path)}"]
    command += [
        f"--output={out}",
        "--outputs=pha",
        "--batch-size=2",
        f"--stream=pha=udp://127.0.0.1:{target}",
    ]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        for _ in range(600):  # until the receiver got frames
            if len(receiver.levels) >= 5:
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        sender.kill()
        process.kill()
    receiver.join()
    assert process.returncode == 1, stderr.decode()[-2000:]
    assert "predict stopped by SIGTERM" in stderr.decode()
    assert f"-> udp://127.0.0.1:{target}:" in stderr.decode()  # the stream's line: it was ended
    recorded = list(levels(out / "live" / "pha.mp4"))  # finalized and playable
    assert len(recorded) >= 5 and np.all(np.diff(recorded) % 32 == 1)
    sent = iter(recorded)  # streamed in order, a frame dropped at most when the stream fell behind; the batch
    assert all(level in sent for level in receiver.levels)  # stopped at is recorded but not streamed


def test_a_receiver_that_stops_reading_drops_frames_never_the_caller_and_stops_the_stream():
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = []  # the connection is taken and never read
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    sink = LiveSink(f"tcp://127.0.0.1:{listener.getsockname()[1]}", Fraction(30), (640, 360), timeout=1)
    noise, waits = np.random.default_rng(0).integers(0, 256, (8, 360, 640, 3), dtype=np.uint8), []
    for i in range(200):
        started = time.monotonic()
        sink.send(noise[i % 8], i / 30, time.time())
        waits.append(time.monotonic() - started)
        if sink.failure:
            break
        time.sleep(1 / 30)
    sink.close()
    listener.close()
    assert "timed out" in sink.failure and sink.dropped > 0 and sink.sent + sink.dropped == i + 1
    assert max(waits) < 0.05  # the caller never waits for the stream
    assert f"{sink.sent} frames sent (libx264), {sink.dropped} dropped" in sink.summary()


class PlateDifference(nn.Module):
    """BackgroundMattingV2's stand-in: alpha is how far the frame is from the plate."""

    def forward(self, src: torch.Tensor, bgr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (src - bgr).abs().mean(1, keepdim=True), src


def send_plate_then_subject(url: str) -> None:
    """Four plate frames (grey 40; the third a flash of 200, which the median ignores), then 12 frames of
    40 + STEP * k."""
    with av.open(url, "w", format="mpegts") as output:
        stream = output.add_stream("mpeg2video", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        grey = [40, 40, 200, 40] + [40 + STEP * k for k in range(12)]
        for i, level in enumerate(grey):
            frame = av.VideoFrame.from_ndarray(np.full((HEIGHT, WIDTH, 3), level, np.uint8), format="rgb24")
            frame.pts = i
            output.mux(stream.encode(frame))
            time.sleep(1 / FPS)
        output.mux(stream.encode())


def test_a_plate_captured_from_the_first_frames_is_their_median_and_they_are_not_matted(tmp_path, caplog):
    port = free_port(socket.SOCK_STREAM)
    sender = threading.Timer(0.5, send_plate_then_subject, args=(f"tcp://127.0.0.1:{port}",))
    sender.start()
    data = VideoMattingDataModule(
        [f"tcp://127.0.0.1:{port}?listen=1"],
        backgrounds=["capture:4"],
        batch_size=2,
        live=LiveSettings(timeout=10),
    )
    writer = VideoWriterCallback(tmp_path / "out", outputs=["pha"], codec="ffv1")
    caplog.set_level(logging.INFO, logger="lightning.pytorch")
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, callbacks=[writer])
    trainer.predict(MattingModule(PlateDifference()), datamodule=data, return_predictions=False)
    sender.join()
    assert list(levels(writer.written["live"]["pha"])) == list(range(12))  # |40 + STEP k - 40| / STEP
    assert "background plate taken as the median of its first 4 frames (not matted)" in caplog.text
    assert "12 frames matted" in caplog.text


def test_targets_that_cannot_be_streamed_to_are_refused_naming_them(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"streams\['pha'\] = 'ftp://127.0.0.1:9' is a URL of the unknown"):
        LiveStreamCallback(streams={"pha": "ftp://127.0.0.1:9"})
    with pytest.raises(
        ValueError, match=r"streams\['com'\] = 'out.ts' is not a stream target: a live output"
    ):
        LiveStreamCallback(streams={"com": "out.ts"})
    with pytest.raises(FileNotFoundError, match=r"streams\['pha'\] = '/dev/video987': no such video device"):
        LiveStreamCallback(streams={"pha": "/dev/video987"})
    with pytest.raises(SystemExit) as exit_status:
        main(["matte", "clip.mp4", "--model=rvm-mobilenetv3", "--stream", "pha:udp://127.0.0.1:9"])
    assert exit_status.value.code == 2
    assert "matte: --stream 'pha:udp://127.0.0.1:9' is not OUTPUT=URL" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"--stream 'pha=udp://127.0.0.1:8' gives an output twice: give one"):
        parse_streams(["pha=udp://127.0.0.1:9", "pha=udp://127.0.0.1:8"])
    with pytest.raises(
        ValueError, match=r"backgrounds: 'capture:5' takes the plate from a live source's first"
    ):
        VideoMattingDataModule(["clip.mp4"], backgrounds=["capture:5"])
    live = VideoMattingDataModule(["udp://127.0.0.1:9"], backgrounds=["capture:0"])
    with pytest.raises(
        ValueError, match=r"an image file \(.*\) or capture:N \(the median of the stream's first N"
    ):
        live.setup("predict")

    port = free_port(socket.SOCK_STREAM)  # nothing listens there
    clip = tmp_path / "clip.nut"
    send_pattern(str(clip), 4, "nut")
    streamer = LiveStreamCallback(streams={"pha": f"tcp://127.0.0.1:{port}"}, timeout=1)
    writer = VideoWriterCallback(tmp_path / "out", outputs=["pha"])
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, callbacks=[writer, streamer]
    )
    data = VideoMattingDataModule([str(clip)], backgrounds=[plate(tmp_path)], batch_size=2)
    with pytest.raises(
        ValueError, match=rf"streams\['pha'\] = 'tcp://127.0.0.1:{port}': the live output did not"
    ):
        trainer.predict(MattingModule(MeanMatte()), datamodule=data, return_predictions=False)
    assert not list((tmp_path / "out").rglob("*.mp4"))


@pytest.mark.skipif(
    not list(Path("/dev").glob("video*")), reason="no V4L2 loopback device (v4l2loopback) here"
)
def test_a_v4l2_loopback_device_takes_the_stream(tmp_path):
    device = str(sorted(Path("/dev").glob("video*"))[0])
    streamer = LiveStreamCallback(streams={"pha": device})
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, callbacks=[streamer])
    frames = DataLoader(TensorDataset(torch.rand(4, 3, HEIGHT, WIDTH)), batch_size=2)
    trainer.predict(Brightness(), frames, return_predictions=False)
    assert streamer.sinks["pha"].sent == 4 and streamer.sinks["pha"].failure is None
