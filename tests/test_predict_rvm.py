"""Recurrent predict: RVM through MattingModule + VideoWriterCallback equals a frame-by-frame loop."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from conftest import read_video
from test_models_rvm import manifest, recipe
from test_predict import run_cli

from lightning_matting.callbacks import VideoWriterCallback
from lightning_matting.data import VideoMattingDataModule, VideoReader, make_clip
from lightning_matting.models import RobustVideoMatting
from lightning_matting.module import MattingModule
from lightning_matting.writers import VideoWriter

SIZE = (64, 48)


@pytest.fixture(scope="module")
def rvm() -> RobustVideoMatting:
    model = RobustVideoMatting("mobilenetv3")
    model.load_state_dict(recipe.reference_weights(manifest("mobilenetv3")))
    return model.eval()


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list:
    folder = tmp_path_factory.mktemp("clips")
    paths = []
    for seed, frames in ((1, 7), (2, 5)):
        clip = make_clip(*SIZE, frames, seed=seed)
        path = folder / f"clip{seed}.mkv"
        with VideoWriter(path, 30, *SIZE, fourcc="FFV1") as writer:
            writer.add_batch(clip.src)
        paths.append(path)
    return paths


def loop_alpha(model: RobustVideoMatting, path, ratio: float) -> np.ndarray:
    """The reference way: every frame in turn, the state carried, from a fresh start."""
    state = [None] * 4
    out = []
    with torch.no_grad():
        for frame in VideoReader(path):
            fgr, pha, *state = model(frame[None], *state, downsample_ratio=ratio)
            out.append(pha[0, 0])
    return torch.stack(out).mul(255).round().to(torch.uint8).numpy()


@pytest.mark.parametrize("frames_per_batch", [1, 4])
def test_written_alpha_equals_the_frame_by_frame_loop(tmp_path, rvm, clips, frames_per_batch):
    dm = VideoMattingDataModule(sources=[str(p) for p in clips], batch_size=frames_per_batch)
    callback = VideoWriterCallback(tmp_path / "out", outputs=["pha", "com"], fourcc="FFV1")
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, callbacks=[callback])
    trainer.predict(MattingModule(rvm, downsample_ratio=0.5), datamodule=dm, return_predictions=False)
    for path in clips:  # the second video starts from a fresh state, as the loop does
        written, _, _, _ = read_video(tmp_path / "out" / path.stem / "pha.mkv")
        expected = loop_alpha(rvm, path, 0.5)
        assert written.shape[0] == expected.shape[0]
        difference = np.abs(written[..., 0].astype(int) - expected.astype(int))
        assert difference.max() <= 1  # float32 rounding of a whole clip vs single frames: at most one level


def test_a_lost_state_would_show(rvm, clips):
    """The comparison above can fail: restarting the state every frame changes the written alpha."""
    carried = loop_alpha(rvm, clips[0], 0.5)
    restarted = []
    with torch.no_grad():
        for frame in VideoReader(clips[0]):
            restarted.append(rvm(frame[None], downsample_ratio=0.5)[1][0, 0])
    restarted = torch.stack(restarted).mul(255).round().to(torch.uint8).numpy()
    assert np.abs(carried[1:].astype(int) - restarted[1:].astype(int)).max() > 1


def test_rvm_needs_no_background_and_seg_is_an_output(tmp_path, rvm, clips):
    dm = VideoMattingDataModule(sources=[str(clips[1])], batch_size=2)
    callback = VideoWriterCallback(tmp_path / "out", outputs=["seg", "fgr"], fourcc="FFV1")
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, callbacks=[callback])
    trainer.predict(MattingModule(rvm), datamodule=dm, return_predictions=False)
    for output in ("seg", "fgr"):
        frames, _, width, height = read_video(tmp_path / "out" / clips[1].stem / f"{output}.mkv")
        assert (len(frames), width, height) == (5, *SIZE)


def test_the_rvm_config_runs_from_the_cli(tmp_path, rvm, clips):
    checkpoint = tmp_path / "rvm_mobilenetv3.pth"
    torch.save(rvm.state_dict(), checkpoint)
    result = run_cli(
        "predict",
        "--config",
        "configs/predict_rvm.yaml",
        f"--model.checkpoint={checkpoint}",
        f"--data.sources=[{clips[1]}]",
        f"--trainer.callbacks.output_dir={tmp_path / 'out'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for output in ("com", "pha", "fgr"):
        frames, _, width, height = read_video(tmp_path / "out" / clips[1].stem / f"{output}.mp4")
        assert (len(frames), width, height) == (5, *SIZE)
