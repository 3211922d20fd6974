"""TrainingStages: a schedule of clip lengths, data and learning rates in one fit; its bad settings."""

from __future__ import annotations

import lightning as L
import pytest
from test_matting_sets import DEMO_WEIGHTS, SIZE, backgrounds, videomatte

from lightning_matting.callbacks import Stage, TrainingStages
from lightning_matting.data import VideoMattingDataModule
from lightning_matting.module import MattingModule


class Spy(L.Callback):
    """Per epoch: the shape of the first training batch's src and the optimizer's rates by group name."""

    def __init__(self):
        self.seen: dict[int, tuple] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        rates = {group["name"]: group["lr"] for group in trainer.optimizers[0].param_groups}
        self.seen.setdefault(trainer.current_epoch, (tuple(batch["src"].shape), rates))


def test_each_stage_changes_the_clip_length_and_the_rates_from_its_epoch(tmp_path):
    dm = VideoMattingDataModule(
        train_data="videomatte",
        train_root=str(videomatte(tmp_path / "videomatte")),
        backgrounds_root=str(backgrounds(tmp_path / "backgrounds")),
        train_size=SIZE,
        batch_size=2,
        augment=False,
    )
    stages = TrainingStages(
        [
            {
                "epoch": 0,
                "clip_length": 1,
                "learning_rate": 1e-3,
                "backbone_learning_rate": 1e-4,
            },  # as in YAML
            Stage(2, clip_length=3, learning_rate=5e-4, backbone_learning_rate=5e-5),
        ]
    )
    spy = Spy()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=3,
        limit_train_batches=1,
        limit_val_batches=0,
        logger=False,
        callbacks=[stages, spy],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(MattingModule("mattingbase-mobilenetv2", checkpoint=str(DEMO_WEIGHTS)), datamodule=dm)
    first = {"backbone": 1e-4, "rest": 1e-3}
    assert spy.seen == {
        0: ((2, 3, 48, 64), first),
        1: ((2, 3, 48, 64), first),
        2: ((2, 3, 3, 48, 64), {"backbone": 5e-5, "rest": 5e-4}),  # clips of 3 frames from epoch 2
    }


@pytest.mark.parametrize(
    ("stages", "match"),
    [
        ([], r"stages must be a non-empty list of Stage"),
        ([Stage(2), Stage(1)], r"stages must start at strictly increasing epochs, got epochs \[2, 1\]"),
        ([{"epoch": -1}], r"a stage's epoch must be an int >= 0, got -1"),
        ([{"epoch": 0, "learning_rate": -1.0}], r"a stage's learning_rate must be a number >= 0, got -1.0"),
    ],
)
def test_bad_stages_are_named(stages, match):
    with pytest.raises(ValueError, match=match):
        TrainingStages(stages)


def test_a_datamodule_that_cannot_change_its_training_data_is_refused():
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, callbacks=[TrainingStages([Stage(0)])])
    with pytest.raises(ValueError, match=r"TrainingStages needs a datamodule implementing set_training"):
        trainer.fit(
            MattingModule("mattingbase-mobilenetv2", checkpoint=str(DEMO_WEIGHTS)),
            datamodule=L.LightningDataModule(),
        )
