"""fit / validate with VideoWriterCallback: validation videos per epoch, metrics in the logger."""

from __future__ import annotations

import csv

import lightning as L
import pytest
from conftest import read_video
from lightning.pytorch.loggers import CSVLogger

from lightning_matting.callbacks import VideoWriterCallback
from lightning_matting.data import VideoMattingDataModule
from lightning_matting.data.settings import SyntheticSettings, TrainingDataSettings
from lightning_matting.module import MattingModule


def datamodule() -> VideoMattingDataModule:
    return VideoMattingDataModule(
        batch_size=2,
        synthetic=SyntheticSettings(size=(64, 48), frames=4),
        train=TrainingDataSettings(clips=2, val_clips=2),
    )


def trainer(tmp_path, callback, logger=None, **kwargs) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        logger=logger if logger is not None else CSVLogger(tmp_path / "logs"),
        callbacks=[callback],
        enable_checkpointing=False,
        enable_progress_bar=False,
        **kwargs,
    )


def test_fit_writes_validation_videos_each_epoch_and_logs_metrics(tmp_path):
    callback = VideoWriterCallback(tmp_path / "out", outputs=["com", "pha"], fourcc="FFV1")
    run = trainer(tmp_path, callback, max_epochs=2, limit_train_batches=2)
    run.fit(MattingModule("mattingbase-mobilenetv2"), datamodule=datamodule())
    for epoch in (0, 1):
        for output in ("com", "pha"):
            frames, _, width, height = read_video(
                tmp_path / "out" / "val" / "version_0" / f"epoch={epoch}" / "val_000" / f"{output}.mp4"
            )
            assert (len(frames), width, height) == (4, 64, 48)
        assert not (
            tmp_path / "out" / "val" / "version_0" / f"epoch={epoch}" / "val_001"
        ).exists()  # val_videos=1
    assert not (tmp_path / "out" / "val" / "version_0" / "sanity_check").exists()
    with open(run.logger.experiment.metrics_file_path) as f:
        rows = [row for row in csv.DictReader(f) if row.get("val/MSE")]
    assert len(rows) == 2
    for name in ("val/SAD", "val/MSE", "val/GradientError", "val/ConnectivityError", "val/DtSSD"):
        assert float(rows[-1][name]) >= 0


def test_validate_alone_and_sanity_check_on_request(tmp_path):
    callback = VideoWriterCallback(tmp_path / "out", outputs=["pha"], val_videos=2, log_sanity_check=True)
    trainer(tmp_path, callback).validate(MattingModule("mattingbase-mobilenetv2"), datamodule=datamodule())
    for video in ("val_000", "val_001"):
        assert len(read_video(tmp_path / "out" / "val" / "version_0" / "epoch=0" / video / "pha.mp4")[0]) == 4

    fit_callback = VideoWriterCallback(tmp_path / "fit", outputs=["pha"], log_sanity_check=True)
    trainer(tmp_path, fit_callback, max_steps=1, limit_val_batches=1).fit(
        MattingModule("mattingbase-mobilenetv2"), datamodule=datamodule()
    )
    sanity = tmp_path / "fit" / "val" / "version_1" / "sanity_check" / "val_000" / "pha.mp4"
    assert len(read_video(sanity)[0]) == 2


def test_a_second_fit_in_the_same_folder_writes_beside_the_first(tmp_path):
    for _ in range(2):
        callback = VideoWriterCallback(tmp_path / "out", outputs=["pha"])
        trainer(tmp_path, callback, max_epochs=1, limit_train_batches=1).fit(
            MattingModule("mattingbase-mobilenetv2"), datamodule=datamodule()
        )
    for version in ("version_0", "version_1"):  # the CSV logger's versions
        assert len(read_video(tmp_path / "out" / "val" / version / "epoch=0" / "val_000" / "pha.mp4")[0]) == 4


def test_val_videos_must_be_a_count(tmp_path):
    with pytest.raises(ValueError, match=r"invalid val_videos \(-1\): expected an int >= 0"):
        VideoWriterCallback(tmp_path, val_videos=-1)
