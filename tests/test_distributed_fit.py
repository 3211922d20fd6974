"""fit and validate under strategy="ddp" (2 gloo processes): training and validation frames split across ranks,
metrics synced, every rank's validation videos written by rank zero."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
from conftest import read_video
from test_predict import ROOT

from lightning_matting.data.sampling import VideoBatchSampler

# Lightning's "ddp" launches this file again for rank 1, so it is a script with a __main__ guard.
DRIVER = """
import json, sys
import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning_matting.callbacks import VideoWriterCallback
from lightning_matting.data import SyntheticSettings, TrainingDataSettings, VideoMattingDataModule
from lightning_matting.module import MattingModule

out, log = sys.argv[1:3]


class FrameLog(L.Callback):
    # which frames each rank trains and validates on
    def _log(self, stage, batch):
        rank = torch.distributed.get_rank()
        frames = [[video, int(index)] for video, index in zip(batch.video, batch.index)]
        with open(log, "a") as f:
            f.write(json.dumps([stage, rank, frames]) + "\\n")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._log("train", batch)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            self._log("val", batch)


if __name__ == "__main__":
    dm = VideoMattingDataModule(
        batch_size=2,
        synthetic=SyntheticSettings(size=(64, 48), frames=4),
        train=TrainingDataSettings(clips=2, val_clips=2),
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=1,
        logger=CSVLogger(out + "/logs"),
        callbacks=[VideoWriterCallback(out, outputs=["pha"], val_videos=2), FrameLog()],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(MattingModule("mattingbase-mobilenetv2"), datamodule=dm)
"""


def test_fit_under_ddp_splits_training_and_validation_and_writes_videos_on_rank_zero(tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    log = tmp_path / "frames.jsonl"
    result = subprocess.run(
        [sys.executable, str(driver), str(tmp_path / "out"), str(log)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "custom batch sampler" not in result.stderr
    seen: dict[tuple[str, int], list] = {}
    for line in log.read_text().splitlines():
        stage, rank, frames = json.loads(line)
        seen.setdefault((stage, rank), []).extend(map(tuple, frames))
    for stage, total in (("train", 8), ("val", 8)):  # 2 clips of 4 frames each
        ranks = [set(seen[(stage, 0)]), set(seen[(stage, 1)])]
        assert not ranks[0] & ranks[1], f"{stage}: both ranks got {ranks[0] & ranks[1]}"
        assert len(ranks[0] | ranks[1]) == total
    assert {video for video, _ in seen[("val", 0)]} == {"val_000"}  # whole clips per rank, in order
    assert seen[("val", 0)] == [("val_000", i) for i in range(4)]

    videos = sorted((tmp_path / "out" / "val").rglob("pha.mp4"))
    assert [path.parent.name for path in videos] == ["val_000", "val_001"]  # rank zero's clip and rank one's
    assert [len(read_video(path)[0]) for path in videos] == [4, 4]
    metrics = list(csv.DictReader(open(next((tmp_path / "out" / "logs").rglob("metrics.csv")))))
    assert [row for row in metrics if row.get("val/MSE")]


def test_video_batch_sampler_never_drops_frames():
    with pytest.raises(ValueError, match=r"drop_last must be False: VideoBatchSampler gives every frame"):
        VideoBatchSampler([5], batch_size=2, drop_last=True)
