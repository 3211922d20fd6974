"""trainer.predict with MattingModule + VideoWriterCallback: files, frame counts, order, failures."""

from __future__ import annotations

import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import cv2
import lightning as L
import numpy as np
import pytest
import torch
from conftest import read_video
from torch import nn

from lightning_matting.callbacks import VideoWriterCallback
from lightning_matting.data import VideoMattingDataModule
from lightning_matting.module import MattingModule
from lightning_matting.settings import RefineSettings
from lightning_matting.writers import VideoWriter

ROOT = Path(__file__).parents[1]


def counter_level(index: int) -> int:
    """The grey level that encodes frame `index` (0..23), 10 levels apart to survive lossy codecs."""
    return 20 + 10 * index


def write_counter_clip(path: Path, frames: int, fps=30, size=(64, 48)) -> Path:
    """A lossless clip whose frame i is a flat grey of counter_level(i)."""
    width, height = size
    with VideoWriter(path, fps, width, height, fourcc="FFV1") as writer:
        for i in range(frames):
            writer.add_batch(torch.full((1, 3, height, width), counter_level(i), dtype=torch.uint8))
    return path


class MeanMatte(nn.Module):
    """A stand-in network: pha = mean of src, fgr = src (the BackgroundMattingV2 call and tuple)."""

    def __init__(self, fail_at_call: int | None = None):
        super().__init__()
        self.calls = 0
        self.fail_at_call = fail_at_call

    def forward(self, src, bgr):
        self.calls += 1
        if self.calls == self.fail_at_call:
            raise RuntimeError("boom")
        return src.mean(1, keepdim=True), src


def plate(tmp_path: Path, size=(64, 48)) -> str:
    """A black plate of `size`, written once (a resumed run must see the same file)."""
    path = tmp_path / f"plate{size[0]}x{size[1]}.png"
    if not path.is_file():
        cv2.imwrite(str(path), np.zeros((size[1], size[0], 3), np.uint8))
    return str(path)


def predict(module, datamodule, callback, **trainer_kwargs):
    trainer = L.Trainer(
        accelerator="cpu", logger=False, callbacks=[callback], enable_progress_bar=False, **trainer_kwargs
    )
    return trainer.predict(module, datamodule=datamodule, return_predictions=False)


def levels(frames: np.ndarray) -> list[int]:
    """The flat grey level of each decoded frame [N,H,W,3]."""
    return [int(round(float(frame.mean()))) for frame in frames]


def test_two_videos_every_output_with_count_size_fps_and_order(tmp_path):
    ntsc = Fraction(30000, 1001)
    a = write_counter_clip(tmp_path / "in" / "a.mkv", 11, fps=ntsc)
    b = write_counter_clip(tmp_path / "in" / "b.mkv", 6, fps=25, size=(48, 32))
    backgrounds = [plate(tmp_path), plate(tmp_path, (48, 32))]
    dm = VideoMattingDataModule(sources=[str(a), str(b)], backgrounds=backgrounds, batch_size=4)
    callback = VideoWriterCallback(tmp_path / "out", outputs=["com", "pha", "fgr"], fourcc="FFV1")
    predict(MattingModule(MeanMatte()), dm, callback)

    for video, count, fps, size in (("a", 11, ntsc, (64, 48)), ("b", 6, 25, (48, 32))):
        for output in ("com", "pha", "fgr"):
            frames, read_fps, width, height = read_video(tmp_path / "out" / video / f"{output}.mkv")
            assert (len(frames), (width, height)) == (count, size)
            assert read_fps == pytest.approx(float(fps), abs=1e-4)
        pha, _, _, _ = read_video(tmp_path / "out" / video / "pha.mkv")
        assert levels(pha) == [counter_level(i) for i in range(count)]
    assert callback.written["b"]["pha"] == tmp_path / "out" / "b" / "pha.mkv"


def test_default_mp4v_output_is_playable_and_ordered(tmp_path):
    source = write_counter_clip(tmp_path / "clip.mkv", 9)
    dm = VideoMattingDataModule(sources=[str(source)], backgrounds=[plate(tmp_path)], batch_size=2)
    predict(MattingModule(MeanMatte()), dm, VideoWriterCallback(tmp_path / "out", outputs=["pha"]))
    frames, fps, width, height = read_video(tmp_path / "out" / "clip" / "pha.mp4")
    assert (len(frames), fps, width, height) == (9, 30, 64, 48)
    decoded = [round((level - counter_level(0)) / 10) for level in levels(frames)]  # lossy: nearest counter
    assert decoded == list(range(9))


def test_composite_on_target_colour(tmp_path):
    source = write_counter_clip(tmp_path / "clip.mkv", 2)
    dm = VideoMattingDataModule(sources=[str(source)], backgrounds=[plate(tmp_path)], target="#0000ff")

    class HalfMatte(nn.Module):
        def forward(self, src, bgr):
            return torch.full_like(src[:, :1], 0.5), torch.ones_like(src)

    predict(
        MattingModule(HalfMatte()), dm, VideoWriterCallback(tmp_path / "out", outputs=["com"], fourcc="FFV1")
    )
    frames, _, _, _ = read_video(tmp_path / "out" / "clip" / "com.mkv")
    assert frames[0, 0, 0].tolist() == [128, 128, 255]  # white over blue at alpha 0.5, rounded


def test_image_sequence_output_with_rgba_composite(tmp_path):
    source = write_counter_clip(tmp_path / "clip.mkv", 3)
    dm = VideoMattingDataModule(sources=[str(source)], backgrounds=[plate(tmp_path)], batch_size=2)
    callback = VideoWriterCallback(tmp_path / "out", outputs=["com", "pha"], format="image_sequence")
    predict(MattingModule(MeanMatte()), dm, callback)
    com = sorted((tmp_path / "out" / "clip" / "com").iterdir())
    assert [p.name for p in com] == ["00000.png", "00001.png", "00002.png"]
    for i, path in enumerate(com):
        bgra = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        level = counter_level(i)
        assert bgra.shape == (48, 64, 4) and bgra[0, 0].tolist() == [level] * 4  # fgr, straight alpha
    pha = cv2.imread(str(tmp_path / "out" / "clip" / "pha" / "00002.png"), cv2.IMREAD_UNCHANGED)
    assert pha.shape == (48, 64) and pha[0, 0] == counter_level(2)


@pytest.mark.parametrize("exception", [RuntimeError, KeyboardInterrupt])
def test_failure_at_batch_k_leaves_playable_files_with_the_frames_before(tmp_path, exception):
    source = write_counter_clip(tmp_path / "clip.mkv", 20)
    dm = VideoMattingDataModule(sources=[str(source)], backgrounds=[plate(tmp_path)], batch_size=3)
    net = MeanMatte(fail_at_call=4)  # batches 0..2 (9 frames) are predicted, the 4th call fails
    if exception is KeyboardInterrupt:
        net.forward = _interrupting(net.forward, at_call=4)
    callback = VideoWriterCallback(tmp_path / "out", outputs=["pha", "com"], fourcc="FFV1")
    expected = SystemExit if exception is KeyboardInterrupt else RuntimeError  # Lightning exits on Ctrl-C
    with pytest.raises(expected):
        predict(MattingModule(net), dm, callback)
    pha, _, _, _ = read_video(tmp_path / "out" / "clip" / "pha.mkv")
    assert levels(pha) == [counter_level(i) for i in range(9)]
    assert len(read_video(tmp_path / "out" / "clip" / "com.mkv")[0]) == 9


def _interrupting(forward, at_call):
    calls = []

    def wrapped(src, bgr):
        calls.append(1)
        if len(calls) == at_call:
            raise KeyboardInterrupt
        return forward(src, bgr)

    return wrapped


def test_existing_outputs_are_refused_unless_overwrite(tmp_path):
    source = write_counter_clip(tmp_path / "clip.mkv", 2)
    dm = VideoMattingDataModule(sources=[str(source)], backgrounds=[plate(tmp_path)])
    predict(MattingModule(MeanMatte()), dm, VideoWriterCallback(tmp_path / "out", outputs=["pha"]))
    with pytest.raises(FileExistsError, match=r"1 output\(s\) exist already .*clip/pha.mp4.* overwrite=True"):
        predict(MattingModule(MeanMatte()), dm, VideoWriterCallback(tmp_path / "out", outputs=["pha"]))
    predict(
        MattingModule(MeanMatte()), dm, VideoWriterCallback(tmp_path / "out", outputs=["pha"], overwrite=True)
    )
    assert len(read_video(tmp_path / "out" / "clip" / "pha.mp4")[0]) == 2


def test_return_predictions_warns_about_memory(tmp_path):
    source = write_counter_clip(tmp_path / "clip.mkv", 2)
    dm = VideoMattingDataModule(sources=[str(source)], backgrounds=[plate(tmp_path)])
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, callbacks=[VideoWriterCallback(tmp_path)]
    )
    with pytest.warns(UserWarning, match=r"return_predictions=True\) keeps every predicted frame in memory"):
        trainer.predict(MattingModule(MeanMatte()), datamodule=dm)


def test_real_network_under_bf16_mixed_precision(tmp_path):
    source = write_counter_clip(tmp_path / "clip.mkv", 3, size=(62, 46))  # not a multiple of 4: padded
    dm = VideoMattingDataModule(sources=[str(source)], backgrounds=[plate(tmp_path, (62, 46))], batch_size=2)
    callback = VideoWriterCallback(
        tmp_path / "out", outputs=["com", "pha", "fgr", "err", "ref"], fourcc="FFV1"
    )
    module = MattingModule("mattingrefine-mobilenetv2", refine=RefineSettings(mode="full"))
    with pytest.warns(UserWarning, match="untrained weights"):
        predict(module, dm, callback, precision="bf16-mixed")
    for output in ("com", "pha", "fgr", "err", "ref"):
        frames, _, width, height = read_video(tmp_path / "out" / "clip" / f"{output}.mkv")
        assert (len(frames), width, height) == (3, 62, 46)


def test_module_argument_errors(tmp_path):
    with pytest.raises(
        ValueError, match=r"outputs \['ref'\] need \['ref'\], which mattingbase-mobilenetv2 does not"
    ):
        MattingModule("mattingbase-mobilenetv2", outputs=["ref"])
    with pytest.raises(ValueError, match=r"outputs must be a non-empty list of com, pha, .* got \['alpha'\]"):
        MattingModule("mattingbase-mobilenetv2", outputs=["alpha"])
    with pytest.raises(
        ValueError, match=r"target_color must be 3 floats \(R, G, B\) in \[0, 1\], got \(0, 255, 0\)"
    ):
        MattingModule("mattingbase-mobilenetv2", target_color=(0, 255, 0))
    with pytest.raises(ValueError, match=r"for an nn.Module, configure and load it yourself"):
        MattingModule(MeanMatte(), checkpoint="x.pth")
    with pytest.raises(ValueError, match=r"outputs must be a non-empty list"):
        VideoWriterCallback(tmp_path, outputs=[])
    with pytest.raises(
        ValueError, match=r"invalid format \('gif'\): expected one of 'video', 'image_sequence'"
    ):
        VideoWriterCallback(tmp_path, format="gif")


def test_callback_asks_only_for_outputs_the_module_fixed(tmp_path):
    source = write_counter_clip(tmp_path / "clip.mkv", 2)
    dm = VideoMattingDataModule(sources=[str(source)], backgrounds=[plate(tmp_path)])
    module = MattingModule(MeanMatte(), outputs=["pha"])
    with pytest.raises(
        ValueError, match=r"outputs \['fgr'\] are requested but MattingModule\(outputs=\['pha'\]\)"
    ):
        predict(module, dm, VideoWriterCallback(tmp_path / "out", outputs=["pha", "fgr"]))


def test_missing_background_for_a_model_that_needs_one(tmp_path):
    source = write_counter_clip(tmp_path / "clip.mkv", 2)
    dm = VideoMattingDataModule(sources=[str(source)])
    with pytest.raises(ValueError, match=r"MeanMatte needs a background plate"):
        predict(MattingModule(MeanMatte()), dm, VideoWriterCallback(tmp_path / "out", outputs=["pha"]))


CLI_CONFIG = """
trainer:
  accelerator: cpu
  logger: false
  enable_progress_bar: false
  callbacks:
    - class_path: lightning_matting.callbacks.VideoWriterCallback
      init_args: {{output_dir: {out}, outputs: [com, pha], fourcc: FFV1}}
model:
  model: mattingbase-mobilenetv2
data:
  synthetic:
    clips: 1
    size: [64, 48]
    frames: 5
    dir: {inputs}
"""


def run_cli(*args: str, folder: Path = ROOT) -> subprocess.CompletedProcess:
    """`lightning-matting *args` in a fresh process run in `folder` (this checkout importable, no debug)."""
    env = {k: v for k, v in os.environ.items() if k != "LIGHTNING_MATTING_DEBUG"}
    return subprocess.run(
        [sys.executable, "-m", "lightning_matting.cli", *args],
        capture_output=True,
        text=True,
        cwd=folder,
        env={**env, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )


def test_cli_with_callback_from_yaml(tmp_path):
    config = tmp_path / "predict.yaml"
    config.write_text(CLI_CONFIG.format(out=tmp_path / "out", inputs=tmp_path / "inputs"))
    result = run_cli("predict", "--config", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    for output in ("com", "pha"):
        frames, _, width, height = read_video(tmp_path / "out" / "synthetic_000" / f"{output}.mkv")
        assert (len(frames), width, height) == (5, 64, 48)
    assert (
        f"pha: {tmp_path / 'out' / 'synthetic_000' / 'pha.mkv'} (5 frames)" in result.stdout + result.stderr
    )


def synthetic_predict_args(frames: int) -> list[str]:
    """`lightning-matting predict` on CPU over one 64x48 synthetic clip of `frames` frames, no logger."""
    return [
        "predict",
        "--trainer.accelerator=cpu",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--model.model=mattingbase-mobilenetv2",
        "--data.synthetic.clips=1",
        "--data.synthetic.size=[64, 48]",
        f"--data.synthetic.frames={frames}",
    ]


def test_cli_callback_added_with_plus_equals(tmp_path):
    result = run_cli(
        *synthetic_predict_args(3),
        "--trainer.callbacks+=VideoWriterCallback",
        f"--trainer.callbacks.output_dir={tmp_path / 'out'}",
        "--trainer.callbacks.outputs=[pha]",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(read_video(tmp_path / "out" / "synthetic_000" / "pha.mp4")[0]) == 3


@pytest.mark.slow
def test_demo_config_runs_end_to_end(tmp_path):
    result = run_cli(
        "predict",
        "--config",
        "configs/demo.yaml",
        "--data.synthetic.frames=8",
        f"--data.synthetic.dir={tmp_path / 'inputs'}",
        f"--trainer.callbacks.output_dir={tmp_path / 'demo'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for output in ("com", "pha", "fgr"):
        frames, _, width, height = read_video(tmp_path / "demo" / "synthetic_000" / f"{output}.mp4")
        assert (len(frames), width, height) == (8, 320, 180)


def test_a_static_plate_crosses_once_per_video(tmp_path):
    source = write_counter_clip(tmp_path / "clip.mkv", 6)
    dm = VideoMattingDataModule(
        sources=[str(source)], backgrounds=[plate(tmp_path)], target="#ff0000", batch_size=2
    )
    dm.setup("predict")
    batches = list(dm.predict_dataloader())
    assert [tuple(b.bgr.shape) for b in batches] == [(1, 3, 48, 64)] * 3
    assert batches[0].static == ("bgr", "tgt") and batches[0].src.shape == (2, 3, 48, 64)

    collated = [batch.bgr for batch in batches]  # a new tensor per batch, as the loader sends it
    moved = [dm.transfer_batch_to_device(batch, torch.device("cpu"), 0) for batch in batches]
    assert all(batch.bgr is moved[0].bgr for batch in moved)  # the first batch's copy, kept
    assert collated[1] is not collated[0] and moved[0].bgr is collated[0]
    assert all(batch.index.device.type == "cpu" for batch in moved)


def test_per_frame_plates_are_not_shared(tmp_path):
    source = write_counter_clip(tmp_path / "clip.mkv", 4)
    plate_video = write_counter_clip(tmp_path / "plate.mkv", 4)
    dm = VideoMattingDataModule(sources=[str(source)], backgrounds=[str(plate_video)], batch_size=2)
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    assert batch.bgr.shape == (2, 3, 48, 64) and batch.static == ()
    assert levels(batch.bgr.permute(0, 2, 3, 1).numpy()) == [counter_level(0), counter_level(1)]  # uint8
