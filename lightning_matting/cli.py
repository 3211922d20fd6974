"""`lightning-matting`: LightningCLI over MattingModule and VideoMattingDataModule (fit/validate/test/predict)."""

from __future__ import annotations

import sys

from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from lightning_matting import weights_cli
from lightning_matting.callbacks import (
    VideoWriterCallback,
)  # also lets `callbacks+=VideoWriterCallback` resolve
from lightning_matting.data import VideoMattingDataModule
from lightning_matting.module import MattingModule


class SaveConfigExceptPredict(SaveConfigCallback):
    """Saves the run's config.yaml for fit/validate/test; predict writes only the videos it was asked for."""

    def setup(self, trainer, pl_module, stage: str) -> None:  # noqa: ANN001 - Lightning's signature
        if stage != "predict":
            super().setup(trainer, pl_module, stage)


class MattingCLI(LightningCLI):
    """LightningCLI whose `predict` defaults to `return_predictions: false` (videos go to the writers) and
    takes `--resume=true`: continue an interrupted predict run (sets VideoWriterCallback.resume)."""

    def _prepare_subcommand_parser(self, klass, subcommand, **kwargs):  # noqa: ANN001 - Lightning's signature
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "predict":
            parser.set_defaults(return_predictions=False)
            parser.add_argument(
                "--resume", type=bool, default=False, help="continue an interrupted run where it stopped"
            )
        return parser

    def before_predict(self) -> None:
        if not self.config["predict"].get("resume"):
            return
        writers = [cb for cb in self.trainer.callbacks if isinstance(cb, VideoWriterCallback)]
        if not writers:
            raise ValueError("--resume=true needs a VideoWriterCallback in trainer.callbacks")
        for writer in writers:
            writer.resume = True


def main(args: list[str] | None = None) -> None:
    """Entry point of the `lightning-matting` console script."""
    args = sys.argv[1:] if args is None else args
    if args[:1] == ["weights"]:
        raise SystemExit(weights_cli.main(args[1:]))
    MattingCLI(
        MattingModule,
        VideoMattingDataModule,
        save_config_callback=SaveConfigExceptPredict,
        save_config_kwargs={"overwrite": True},
        args=args,
    )


if __name__ == "__main__":
    main()
