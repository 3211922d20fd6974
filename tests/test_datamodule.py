"""VideoMattingDataModule: predict over files and synthetic clips, fit/validate on synthetic, worker-safe."""

from __future__ import annotations

import dataclasses
import warnings
from fractions import Fraction
from pathlib import Path

import cv2
import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from jsonargparse import ArgumentParser

from lightning_matting.data import VideoInfo, VideoMattingDataModule
from lightning_matting.data.settings import SyntheticSettings, TrainingDataSettings
from lightning_matting.writers import VideoWriter

SMALL = {"size": (64, 48), "frames": 5}  # synthetic clips


def write_video(path: Path, count: int, width: int = 64, height: int = 48, fps: float = 25) -> Path:
    generator = torch.Generator().manual_seed(count)
    frames = torch.randint(0, 256, (count, 3, height, width), dtype=torch.uint8, generator=generator)
    with VideoWriter(path, fps, width, height, fourcc="FFV1") as writer:
        writer.add_batch(frames)
    return path


@pytest.fixture
def user_files(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = write_video(tmp_path / "a" / "take.mkv", 7)
    second = write_video(tmp_path / "b" / "take.mkv", 4, width=32, height=24)
    plate = tmp_path / "plate.png"
    cv2.imwrite(str(plate), np.full((48, 64, 3), 90, np.uint8))
    return [str(first), str(second)], [str(plate), None]


def predict_batches(datamodule: VideoMattingDataModule) -> list[dict]:
    datamodule.setup("predict")
    return list(datamodule.predict_dataloader())


def test_predict_over_files_and_synthetic_clips(user_files, tmp_path):
    sources, backgrounds = user_files
    datamodule = VideoMattingDataModule(
        sources,
        backgrounds,
        batch_size=3,
        synthetic=SyntheticSettings(clips=2, dir=str(tmp_path / "synthetic"), **SMALL),
    )
    datamodule.setup("predict")
    assert datamodule.videos == [
        VideoInfo("take", Fraction(25), 64, 48, 7, sources[0]),
        VideoInfo("take_2", Fraction(25), 32, 24, 4, sources[1]),
        VideoInfo(
            "synthetic_000",
            Fraction(30),
            64,
            48,
            5,
            str(tmp_path / "synthetic" / "synthetic_000" / "src.mp4"),
        ),
        VideoInfo(
            "synthetic_001",
            Fraction(30),
            64,
            48,
            5,
            str(tmp_path / "synthetic" / "synthetic_001" / "src.mp4"),
        ),
    ]
    assert (tmp_path / "synthetic" / "synthetic_001" / "src.mp4").is_file()
    batches = list(datamodule.predict_dataloader())
    assert [(b.video[0], b.index.tolist()) for b in batches] == [
        ("take", [0, 1, 2]), ("take", [3, 4, 5]), ("take", [6]),
        ("take_2", [0, 1, 2]), ("take_2", [3]),
        ("synthetic_000", [0, 1, 2]), ("synthetic_000", [3, 4]),
        ("synthetic_001", [0, 1, 2]), ("synthetic_001", [3, 4]),
    ]  # fmt: skip
    assert all(len(set(b.video)) == 1 for b in batches)
    assert batches[0].bgr is not None and batches[3].bgr is None and batches[5].bgr is not None
    assert batches[0].src.shape == (3, 3, 48, 64) and batches[3].src.shape == (3, 3, 24, 32)
    assert all(f.dtype == torch.uint8 for b in batches for f in (b.src, b.bgr) if f is not None)
    assert batches[0].bgr.shape == (1, 3, 48, 64) and batches[0].static == ("bgr",)  # the plate, once


def test_resize_and_target_reach_every_video(user_files):
    sources, backgrounds = user_files
    datamodule = VideoMattingDataModule(sources, backgrounds, resize=(32, 24), target="#00ff00", batch_size=4)
    batches = predict_batches(datamodule)
    assert {(v.width, v.height) for v in datamodule.videos} == {(32, 24)}
    assert all(b.src.shape[1:] == b.tgt.shape[1:] == (3, 24, 32) for b in batches)
    assert torch.equal(batches[0].tgt[0, :, 0, 0], torch.tensor([0, 255, 0], dtype=torch.uint8))


def test_workers_yield_the_same_batches_as_the_main_process(user_files):
    sources, backgrounds = user_files
    settings = {"batch_size": 2, "synthetic": SyntheticSettings(clips=1, **SMALL)}
    in_process = predict_batches(VideoMattingDataModule(sources, backgrounds, num_workers=0, **settings))
    in_workers = predict_batches(VideoMattingDataModule(sources, backgrounds, num_workers=2, **settings))
    assert len(in_process) == len(in_workers) == 9
    for a, b in zip(in_process, in_workers, strict=True):
        for field in dataclasses.fields(a):
            mine, theirs = getattr(a, field.name), getattr(b, field.name)
            if isinstance(mine, torch.Tensor):
                assert torch.equal(mine, theirs), field.name
            else:
                assert mine == theirs, field.name


def test_temporary_synthetic_folder_is_removed_at_teardown():
    datamodule = VideoMattingDataModule(synthetic=SyntheticSettings(clips=1, **SMALL))
    datamodule.setup("predict")
    folder = Path(datamodule.predict_dataset.datasets[0].source.path).parent.parent
    assert folder.is_dir()
    datamodule.teardown("predict")
    assert not folder.exists()


def test_fit_and_validate_on_synthetic_clips_with_ground_truth():
    datamodule = VideoMattingDataModule(
        batch_size=4,
        train=TrainingDataSettings(clips=2, val_clips=1),
        synthetic=SyntheticSettings(seed=5, **SMALL),
    )
    datamodule.setup("fit")
    assert len(datamodule.train_dataset) == 10 and len(datamodule.val_dataset) == 5
    batch = next(iter(datamodule.train_dataloader()))
    assert batch.tgt is None and batch.static == () and batch.bgr.shape == (4, 3, 48, 64)
    assert batch.pha.shape == (4, 1, 48, 64) and batch.fgr.shape == (4, 3, 48, 64)
    assert all(frames.dtype == torch.float32 for frames in (batch.src, batch.bgr, batch.pha, batch.fgr))
    val = next(iter(datamodule.val_dataloader()))
    assert val.video[0] == "val_000" and val.index.tolist() == [0, 1, 2, 3]
    train_plates = {datamodule.train_dataset[i]["bgr"].sum().item() for i in (0, 5)}
    assert datamodule.val_dataset[0]["bgr"].sum().item() not in train_plates  # different seeds
    again = VideoMattingDataModule(
        train=TrainingDataSettings(clips=2, val_clips=1), synthetic=SyntheticSettings(seed=5, **SMALL)
    )
    again.setup("validate")
    assert torch.equal(again.val_dataset[3]["src"], datamodule.val_dataset[3]["src"])


def test_trainer_predict_keeps_the_batches(user_files):
    sources, backgrounds = user_files

    class Recorder(pl.LightningModule):
        def predict_step(self, batch, batch_idx):
            return batch.video[0], batch.index.tolist()

    trainer = pl.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predictions = trainer.predict(
            Recorder(), datamodule=VideoMattingDataModule(sources, backgrounds, batch_size=4)
        )
    assert predictions == [("take", [0, 1, 2, 3]), ("take", [4, 5, 6]), ("take_2", [0, 1, 2, 3])]


def test_constructor_is_lightning_cli_friendly(tmp_path):
    parser = ArgumentParser()
    parser.add_class_arguments(VideoMattingDataModule, "data")
    config = parser.parse_args(
        [
            "--data.sources=[a.mp4, frames/]",
            "--data.backgrounds=[plate.png, null]",
            "--data.target=[0.0, 1.0, 0.0]",
            "--data.resize=[640, 360]",
            "--data.fps=30000/1001",
            "--data.synthetic.clips=2",
        ]
    )
    init = parser.instantiate(config).data
    assert init.sources == ["a.mp4", "frames/"] and init.backgrounds == ["plate.png", None]
    assert init.resize == (640, 360) and init.fps == Fraction(30000, 1001) and init.target == (0.0, 1.0, 0.0)
    assert init.synthetic == SyntheticSettings(clips=2)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"sources": ["a.mp4"], "backgrounds": []},
            ValueError,
            "backgrounds must give one entry .* 1 sources, 0",
        ),
        ({"sources": "a.mp4"}, ValueError, "sources must be a list of paths, got the single path 'a.mp4'"),
        ({"batch_size": 0}, ValueError, r"invalid batch_size \(0\): expected an int >= 1"),
        ({"num_workers": -1}, ValueError, r"invalid num_workers \(-1\): expected an int >= 0"),
        ({"resize": (640, 0)}, ValueError, r"invalid resize \(\(640, 0\)\): expected \(width, height\)"),
        ({"target": "#00ff0"}, ValueError, r"invalid colour \('#00ff0'\): expected '#RRGGBB'"),
        ({"fps": "fast"}, ValueError, r"invalid fps \('fast'\): expected a number > 0"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs, error, message):
    with pytest.raises(error, match=message):
        VideoMattingDataModule(**kwargs)


def test_bad_inputs_fail_at_setup(tmp_path):
    with pytest.raises(ValueError, match="nothing to predict"):
        VideoMattingDataModule().setup("predict")
    with pytest.raises(FileNotFoundError, match="video file not found: .*missing.mp4"):
        VideoMattingDataModule([str(tmp_path / "missing.mp4")]).setup("predict")
    with pytest.raises(ValueError, match="^data.train.clips must be >= 1 to train on synthetic clips$"):
        VideoMattingDataModule(train=TrainingDataSettings(clips=0)).setup("fit")
