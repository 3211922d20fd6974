"""TrainingStages: a schedule of clip lengths, data and learning rates in one fit; its bad settings."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from test_matting_sets import DEMO_WEIGHTS, SIZE, backgrounds, videomatte

from lightning_matting.callbacks import Stage, TrainingStages
from lightning_matting.data import MattingBatch, VideoMattingDataModule
from lightning_matting.data.settings import HighResSettings, TrainingDataSettings
from lightning_matting.module import MattingModule
from lightning_matting.settings import TrainingSettings


class Spy(L.Callback):
    """Per epoch: the shape of the first training batch's src and the optimizer's rates by group name."""

    def __init__(self):
        self.seen: dict[int, tuple] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        rates = {group["name"]: group["lr"] for group in trainer.optimizers[0].param_groups}
        self.seen.setdefault(trainer.current_epoch, (_shapes(batch), rates))


def _shapes(batch: MattingBatch | dict) -> tuple | dict:
    """src's shape, or per pass for a two-pass batch {"low": ..., "high": ...}."""
    if isinstance(batch, MattingBatch):
        return tuple(batch.src.shape)
    return {name: tuple(part.src.shape) for name, part in batch.items()}


class RefinerWatch(L.Callback):
    """Whether each epoch changed the refiner's weights, and the base network's."""

    def __init__(self):
        self.changed: dict[int, tuple[bool, bool]] = {}

    def on_train_epoch_start(self, trainer, pl_module):
        self.before = _weights(pl_module.net)

    def on_train_epoch_end(self, trainer, pl_module):
        after = _weights(pl_module.net)
        self.changed[trainer.current_epoch] = tuple(
            not torch.equal(self.before[part], after[part]) for part in ("refiner", "others")
        )


def _weights(net) -> dict[str, torch.Tensor]:
    parts = {"refiner": [], "others": []}
    for name, value in net.named_parameters():
        parts["refiner" if name.startswith("refiner.") else "others"].append(value.detach().flatten().clone())
    return {part: torch.cat(values) for part, values in parts.items()}


def _trainer(max_epochs: int, *callbacks: L.Callback) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        max_epochs=max_epochs,
        limit_train_batches=1,
        limit_val_batches=0,
        logger=False,
        callbacks=list(callbacks),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def _videomatte_data(tmp_path, batch_size: int = 4, **train) -> VideoMattingDataModule:
    return VideoMattingDataModule(
        batch_size=batch_size,
        train=TrainingDataSettings(
            data="videomatte",
            root=str(videomatte(tmp_path / "videomatte")),
            backgrounds_root=str(backgrounds(tmp_path / "backgrounds")),
            augment=False,
            **train,
        ),
    )


def test_bgmv2_trains_its_base_then_the_whole_refine_network_in_one_fit(tmp_path):
    dm = _videomatte_data(tmp_path, size=SIZE, batch_size=2)
    with pytest.warns(UserWarning, match=r"holds a MattingBase: mattingrefine-mobilenetv2 takes its weights"):
        module = MattingModule(
            "mattingrefine-mobilenetv2",
            checkpoint=str(DEMO_WEIGHTS),
            training=TrainingSettings(stage="base", learning_rate=5e-4, backbone_learning_rate=1e-4),
        )
    stages = TrainingStages(
        [
            Stage(
                1,
                bgmv2_stage="refine",
                train_size=(128, 96),  # the base network runs at a quarter: 32x24
                learning_rate=1e-4,
                backbone_learning_rate=5e-5,
                refiner_learning_rate=3e-4,
            )
        ]
    )
    spy, watch = Spy(), RefinerWatch()
    _trainer(2, stages, spy, watch).fit(module, datamodule=dm)
    assert spy.seen == {
        0: ((2, 3, 48, 64), {"backbone": 1e-4, "refiner": 5e-4, "rest": 5e-4}),
        1: ((2, 3, 96, 128), {"backbone": 5e-5, "refiner": 3e-4, "rest": 1e-4}),
    }
    assert watch.changed == {0: (False, True), 1: (True, True)}  # the refiner trains from the refine stage


def test_rvm_adds_a_high_resolution_pass_that_trains_its_refiner(tmp_path):
    dm = _videomatte_data(tmp_path, size=(64, 64), clip_length=2, batch_size=1)
    module = MattingModule("rvm-mobilenetv3", downsample_ratio=1.0)
    stages = TrainingStages(
        [Stage(1, high_res_size=(128, 128), high_res_clip_length=3, refiner_learning_rate=2e-4)]
    )
    spy, watch = Spy(), RefinerWatch()
    trainer = _trainer(2, stages, spy, watch)
    trainer.fit(module, datamodule=dm)
    assert spy.seen[0][0] == (1, 2, 3, 64, 64)
    assert spy.seen[1] == (
        {"low": (1, 2, 3, 64, 64), "high": (1, 3, 3, 128, 128)},
        {"backbone": 1e-4, "refiner": 2e-4, "rest": 5e-4},
    )
    # at ratio 1 the guided filter is not run; at the high-resolution pass's 0.25 it is, and trains
    assert watch.changed == {0: (False, True), 1: (True, True)}
    logged = trainer.callback_metrics
    assert float(logged["train/loss"]) == pytest.approx(
        float(logged["train/high/loss"])
        + sum(
            float(value) for name, value in logged.items() if name.count("/") == 1 and name != "train/loss"
        ),
        rel=1e-5,
    )


def test_each_stage_changes_the_clip_length_and_the_rates_from_its_epoch(tmp_path):
    dm = VideoMattingDataModule(
        batch_size=2,
        train=TrainingDataSettings(
            data="videomatte",
            root=str(videomatte(tmp_path / "videomatte")),
            backgrounds_root=str(backgrounds(tmp_path / "backgrounds")),
            size=SIZE,
            augment=False,
        ),
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
    ("stages", "error", "match"),
    [
        ([], ValueError, r"stages must be a non-empty list of Stage"),
        (
            [Stage(2), Stage(1)],
            ValueError,
            r"stages must start at strictly increasing epochs, got epochs \[2, 1\]",
        ),
        ([{"epoch": -1}], ValueError, r"^invalid stage epoch \(-1\): expected an int >= 0$"),
        (
            [{"epoch": 0, "learning_rate": -1.0}],
            ValueError,
            r"^invalid stage learning_rate \(-1\.0\): expected a number >= 0$",
        ),
        (
            [{"epoch": 0, "refiner_learning_rate": "x"}],
            TypeError,
            r"^invalid stage refiner_learning_rate \('x'\): expected a number >= 0$",
        ),
        (
            [{"epoch": 0, "bgmv2_stage": "coarse"}],
            ValueError,
            r"^invalid stage bgmv2_stage \('coarse'\): expected one of None, 'base', 'refine'$",
        ),
    ],
)
def test_bad_stages_are_named(stages, error, match):
    with pytest.raises(error, match=match):
        TrainingStages(stages)


def test_a_datamodule_that_cannot_change_its_training_data_is_refused():
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, callbacks=[TrainingStages([Stage(0)])])
    with pytest.raises(ValueError, match=r"TrainingStages needs a datamodule implementing set_training"):
        trainer.fit(
            MattingModule("mattingbase-mobilenetv2", checkpoint=str(DEMO_WEIGHTS)),
            datamodule=L.LightningDataModule(),
        )


@pytest.mark.parametrize(
    ("model", "stage", "match"),
    [
        ("mattingbase-mobilenetv2", "refine", r"model.training.stage='refine' needs a MattingRefine network"),
        (
            "rvm-mobilenetv3",
            "base",
            r"model.training.stage applies to BackgroundMattingV2 networks, not rvm-mobilenetv3",
        ),
        (
            "mattingrefine-mobilenetv2",
            "coarse",
            r"^invalid model.training.stage \('coarse'\): expected one of 'base', 'refine'$",
        ),
    ],
)
def test_bad_bgmv2_stages_are_named(model, stage, match):
    with pytest.raises(ValueError, match=match):
        MattingModule(model, training=TrainingSettings(stage=stage))


def test_bad_high_resolution_settings_are_named(tmp_path):
    with pytest.raises(
        ValueError,
        match=r"^invalid model.training.high_res_downsample_ratio \(0\): expected a number in \(0, 1\]$",
    ):
        MattingModule("rvm-mobilenetv3", training=TrainingSettings(high_res_downsample_ratio=0))
    with pytest.raises(ValueError, match=r"data.high_res.size needs real training data"):
        VideoMattingDataModule(high_res=HighResSettings(size=(128, 128)))
    with pytest.raises(ValueError, match=r"^invalid data.high_res.clip_length \(0\): expected an int >= 1$"):
        HighResSettings(size=(128, 128), clip_length=0)


def test_a_bgmv2_stage_needs_a_module_that_can_switch_it(tmp_path):
    class Plain(L.LightningModule):
        def training_step(self, batch, batch_idx):
            return None

        def configure_optimizers(self):
            return None

    trainer = _trainer(1, TrainingStages([Stage(0, bgmv2_stage="refine")]))
    with pytest.raises(
        ValueError, match=r"a stage's bgmv2_stage needs a module implementing set_bgmv2_stage"
    ):
        trainer.fit(Plain(), datamodule=_videomatte_data(tmp_path))
