"""Validation videos in the real loggers' own files: TensorBoard events, a W&B offline run, an MLflow file store.

The packages come with the `[loggers]` extra, which `make test` installs.
"""

from __future__ import annotations

import glob

import av
import cv2
import lightning as L
import numpy as np
import pytest
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_any_module import FRAMES, WIDTH, MyMatting, loader

from lightning_matting.callbacks import VideoWriterCallback
from lightning_matting.callbacks.loggers import hand_to_loggers, warn_unplayable_once


def fit(tmp_path, logger, epochs: int = 2, **kwargs) -> L.Trainer:
    callback = VideoWriterCallback(tmp_path / "out", outputs=["pha"], **kwargs)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        logger=logger,
        callbacks=[callback],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    trainer.fit(MyMatting(), loader(), loader())
    return trainer


def codec_of(path: str) -> tuple[str, str, int]:
    with av.open(path) as container:
        stream = container.streams.video[0]
        return (
            stream.codec_context.name,
            stream.codec_context.pix_fmt,
            sum(1 for _ in container.decode(stream)),
        )


def test_tensorboard_gets_an_animated_clip_at_the_metrics_step(tmp_path):
    fit(tmp_path, TensorBoardLogger(tmp_path / "tb"), val_layout="compare")
    events = EventAccumulator(
        glob.glob(str(tmp_path / "tb" / "**" / "events*"), recursive=True)[0], {"images": 0}
    )
    events.Reload()
    images = events.Images("val/val_0/compare")
    metric_steps = [event.step for event in events.Scalars("val/l1")]
    assert [image.step for image in images] == metric_steps and len(metric_steps) == 2
    ok, animation = cv2.imdecodeanimation(np.frombuffer(images[0].encoded_image_string, np.uint8))
    assert ok and images[0].encoded_image_string.startswith(b"GIF89a")
    assert len(animation.frames) == FRAMES and (images[0].width, images[0].height) == (3 * WIDTH, 64)


def test_wandb_offline_run_holds_h264_videos(tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    try:
        fit(tmp_path, WandbLogger(offline=True, save_dir=str(tmp_path)))
    finally:
        wandb.finish()
    videos = sorted(
        glob.glob(
            str(tmp_path / "wandb" / "offline-run-*" / "files" / "media" / "videos" / "**" / "*.mp4"),
            recursive=True,
        )
    )
    assert len(videos) == 2  # one per validation
    assert all(codec_of(video) == ("h264", "yuv420p", FRAMES) for video in videos)


def test_mlflow_keeps_one_h264_artifact_per_validation(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    fit(tmp_path, MLFlowLogger(tracking_uri=f"file:{tmp_path / 'mlruns'}"))
    artifacts = sorted(
        glob.glob(str(tmp_path / "mlruns" / "*" / "*" / "artifacts" / "val" / "*" / "val_0" / "pha.mp4"))
    )
    assert [path.split("/")[-3] for path in artifacts] == ["epoch=0", "epoch=1"]
    assert all(codec_of(path) == ("h264", "yuv420p", FRAMES) for path in artifacts)


def test_browser_loggers_without_a_browser_codec_warn_once(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    trainer = L.Trainer(
        logger=MLFlowLogger(tracking_uri=f"file:{tmp_path / 'mlruns'}"), enable_progress_bar=False
    )
    with pytest.warns(
        UserWarning,
        match=r"MLFlowLogger show videos in a browser, which cannot play OpenCV's mp4v; install PyAV",
    ):
        warn_unplayable_once(trainer, None)


def test_image_sequences_of_validation_go_to_mlflow_as_folders_of_images(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    fit(tmp_path, MLFlowLogger(tracking_uri=f"file:{tmp_path / 'mlruns'}"), epochs=1, format="image_sequence")
    images = glob.glob(
        str(tmp_path / "mlruns" / "*" / "*" / "artifacts" / "val" / "epoch=0" / "val_0" / "pha" / "*")
    )
    assert sorted(path.rsplit("/", 1)[1] for path in images) == [f"{k:05d}.png" for k in range(FRAMES)]


def test_browser_loggers_warn_once_of_a_chosen_codec_they_cannot_play(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    trainer = L.Trainer(
        logger=MLFlowLogger(tracking_uri=f"file:{tmp_path / 'mlruns'}"), enable_progress_bar=False
    )
    with pytest.warns(
        UserWarning, match=r"MLFlowLogger show videos in a browser, which cannot play codec 'ffv1'; pass"
    ):
        warn_unplayable_once(trainer, "ffv1")


def test_wandb_is_told_that_image_sequences_stay_on_disk(tmp_path):
    (tmp_path / "pha").mkdir()
    trainer = L.Trainer(logger=WandbLogger(offline=True, save_dir=str(tmp_path)), enable_progress_bar=False)
    with pytest.warns(
        UserWarning, match=r"WandbLogger logs video files, so validation image sequences stay in"
    ):
        hand_to_loggers(trainer, "val/val_0/pha", "val/epoch=0/val_0", tmp_path / "pha", [], 30.0)
