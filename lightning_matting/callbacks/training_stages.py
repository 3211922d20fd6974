"""TrainingStages: the references' schedule of training stages in one `fit` (clip length, size, data, rates)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import lightning as L
from lightning.pytorch.utilities import rank_zero_info

from lightning_matting.validators import check_choice, check_int, check_number

TrainData = Literal["synthetic", "videomatte", "images"]


@dataclass(frozen=True)
class Stage:
    """From `epoch` on, these settings; None keeps the previous stage's (or the run's own). A stage's keys are
    flat; each names the run's setting it replaces.

    Args:
        epoch: The stage's first epoch (0-based).
        clip_length: Frames per training item (RVM's sequence length): `data.train.clip_length`.
        train_size: (width, height) in pixels of training items: `data.train.size`.
        train_data: "synthetic", "videomatte" or "images": `data.train.data`.
        train_root: The dataset folder of "videomatte" or "images": `data.train.root`.
        batch_size: Training items per batch: `data.batch_size`.
        high_res_size: (width, height) of RVM's high-resolution training pass, which then runs beside the
            low-resolution one: `data.high_res.size`.
        high_res_clip_length: Frames per item of the high-resolution pass: `data.high_res.clip_length`.
        bgmv2_stage: BGMv2: "base" trains the base network alone, "refine" the whole MattingRefine:
            `model.training.stage`.
        learning_rate: Adam's rate of the decoder (and ASPP): `model.training.learning_rate`.
        backbone_learning_rate: Adam's rate of the backbone: `model.training.backbone_learning_rate`.
        refiner_learning_rate: Adam's rate of the refiner: `model.training.refiner_learning_rate`.
    """

    epoch: int
    clip_length: int | None = None
    train_size: tuple[int, int] | None = None
    train_data: TrainData | None = None
    train_root: str | None = None
    batch_size: int | None = None
    high_res_size: tuple[int, int] | None = None
    high_res_clip_length: int | None = None
    bgmv2_stage: Literal["base", "refine"] | None = None
    learning_rate: float | None = None
    backbone_learning_rate: float | None = None
    refiner_learning_rate: float | None = None

    def __post_init__(self) -> None:
        check_int("stage epoch", self.epoch, minimum=0)
        check_choice("stage bgmv2_stage", self.bgmv2_stage, (None, "base", "refine"))
        for name in ("learning_rate", "backbone_learning_rate", "refiner_learning_rate"):
            rate = getattr(self, name)
            if rate is not None:
                check_number(f"stage {name}", rate, minimum=0)


@runtime_checkable
class StagedTrainingData(Protocol):
    """A datamodule whose training data a stage can change (VideoMattingDataModule)."""

    def set_training(
        self,
        clip_length: int | None = None,
        train_size: tuple[int, int] | None = None,
        train_data: TrainData | None = None,
        train_root: str | None = None,
        batch_size: int | None = None,
        high_res_size: tuple[int, int] | None = None,
        high_res_clip_length: int | None = None,
    ) -> None:
        """Train on these settings from the next training dataloader on (None: unchanged)."""
        ...


@runtime_checkable
class StagedBGMv2Module(Protocol):
    """A module whose BGMv2 training stage a `Stage` can switch (MattingModule)."""

    def set_bgmv2_stage(self, stage: Literal["base", "refine"] | None) -> None:
        """Train the base network alone ("base") or the whole MattingRefine ("refine") from the next step."""
        ...


def check_stages(stages: object) -> tuple[Stage, ...]:
    """A non-empty list of `Stage`s (or their dicts, as from YAML), by strictly increasing epoch."""
    if not isinstance(stages, list | tuple) or not stages:
        raise ValueError(f"stages must be a non-empty list of Stage (epoch, settings), got {stages!r}")
    stages = tuple(stage if isinstance(stage, Stage) else Stage(**stage) for stage in stages)
    epochs = [stage.epoch for stage in stages]
    if epochs != sorted(set(epochs)):
        raise ValueError(f"stages must start at strictly increasing epochs, got epochs {epochs}")
    return stages


class TrainingStages(L.Callback):
    """Runs a training schedule in stages, as the references do across several commands, in one `fit`.

    At the start of each stage's epoch the datamodule trains on the stage's data settings (its training
    dataloader is made again: this callback sets `reload_dataloaders_every_n_epochs=1`), the module trains the
    stage's `bgmv2_stage` (its `training.stage`), and the optimizer's "backbone", "refiner" and "rest" groups (MattingModule's) take
    the stage's rates. A run resumed from a checkpoint continues in the stage of its epoch.

    Args:
        stages: The stages by first epoch (`Stage`, or in YAML a list of mappings `{epoch: 20, clip_length:
            50, learning_rate: 0.0001}`). Before the first stage's epoch, the run's own settings apply.

    Raises:
        ValueError: Stages out of order or with bad settings; at fit, a datamodule that is not a
            `StagedTrainingData`, a `bgmv2_stage` for a module that is not a `StagedBGMv2Module`, or an
            optimizer without the named groups.

    Example (RobustVideoMatting's first two stages)::

        TrainingStages([Stage(0, clip_length=15, learning_rate=2e-4, backbone_learning_rate=1e-4),
                        Stage(20, clip_length=50, learning_rate=1e-4, backbone_learning_rate=5e-5)])
    """

    def __init__(self, stages: list[Stage]):
        self.stages = check_stages(stages)
        self._applied: Stage | None = None

    def _stage_at(self, epoch: int) -> Stage | None:
        current = [stage for stage in self.stages if stage.epoch <= epoch]
        return current[-1] if current else None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if not isinstance(trainer.datamodule, StagedTrainingData):
            raise ValueError(
                "TrainingStages needs a datamodule implementing set_training (StagedTrainingData), such as "
                f"VideoMattingDataModule; got {type(trainer.datamodule).__name__ if trainer.datamodule else None}"
            )
        if any(stage.bgmv2_stage for stage in self.stages) and not isinstance(pl_module, StagedBGMv2Module):
            raise ValueError(
                "a stage's bgmv2_stage needs a module implementing set_bgmv2_stage (StagedBGMv2Module), such as "
                f"MattingModule; got {type(pl_module).__name__}"
            )
        trainer.reload_dataloaders_every_n_epochs = 1  # a stage's data is made at its epoch's start

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._enter(trainer, trainer.current_epoch)  # also the stage of a resumed run's epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._enter(trainer, trainer.current_epoch + 1)  # before the next epoch's dataloader is made

    def _enter(self, trainer: L.Trainer, epoch: int) -> None:
        stage = self._stage_at(epoch)
        if stage is None or stage is self._applied:
            return
        self._applied = stage
        trainer.datamodule.set_training(
            stage.clip_length,
            stage.train_size,
            stage.train_data,
            stage.train_root,
            stage.batch_size,
            stage.high_res_size,
            stage.high_res_clip_length,
        )
        if stage.bgmv2_stage is not None:
            trainer.lightning_module.set_bgmv2_stage(stage.bgmv2_stage)
        rates = {
            "backbone": stage.backbone_learning_rate,
            "refiner": stage.refiner_learning_rate,
            "rest": stage.learning_rate,
        }
        for optimizer in trainer.optimizers:
            names = {group.get("name") for group in optimizer.param_groups}
            if not names & set(rates):
                raise ValueError(
                    "TrainingStages sets the rates of the optimizer's parameter groups named 'backbone', 'refiner' "
                    "and 'rest' "
                    f"(MattingModule.configure_optimizers); this optimizer's groups are named {sorted(map(str, names))}"
                )
            for group in optimizer.param_groups:
                if rates.get(group.get("name")) is not None:
                    group["lr"] = rates[group["name"]]
        changed = {key: value for key, value in vars(stage).items() if value is not None and key != "epoch"}
        rank_zero_info(f"TrainingStages: from epoch {epoch}, {changed}")
