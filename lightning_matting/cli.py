"""`lightning-matting`: LightningCLI over MattingModule and VideoMattingDataModule (fit/validate/test/predict)."""

from __future__ import annotations

import os
import sys
from typing import Any

import yaml
from lightning.pytorch import Callback
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_info

import lightning_matting
from lightning_matting import matte_command, weights_cli
from lightning_matting.callbacks import (
    VideoWriterCallback,
)  # also lets `callbacks+=VideoWriterCallback` resolve
from lightning_matting.cli_errors import DEBUG_ENV, DEBUG_FLAG, SettingsError, reason, run_reporting_errors
from lightning_matting.data import VideoMattingDataModule
from lightning_matting.held_console import HeldConsole, ReleaseAtRunStart, held_console
from lightning_matting.module import MattingModule
from lightning_matting.moved_settings import check_moved_settings
from lightning_matting.outputs import OUTPUTS
from lightning_matting.presets import resolve_config_arguments
from lightning_matting.validators import check_choice

PROG = "lightning-matting"
DESCRIPTION = (
    "Video matting (BackgroundMattingV2 with a background plate, RobustVideoMatting without) through PyTorch "
    "Lightning. predict mattes videos and writes com (composite), pha (alpha), fgr (foreground) and the other "
    "outputs as video files or image sequences; fit trains or fine-tunes a model, writing validation videos "
    "and metrics; validate runs the validation alone. Also: `matte INPUT... --model NAME` (the common case in "
    "one command; `matte --help`), `demo` (the packaged demo) and `weights list|download` (the official "
    "checkpoints). Settings come from YAML configs (-c/--config: a file, or a packaged preset by name: demo, "
    "rvm, bgmv2, alpha, image_sequence, fit_synthetic, finetune_bgmv2, finetune_rvm; `<subcommand> "
    "--print_config` prints a complete one) and from "
    "--key=value options, such as --trainer.callbacks+=VideoWriterCallback. "
    f"`{PROG} <subcommand> --help` lists every setting of a subcommand. On an error the command prints one "
    f"paragraph and exits with 2 (bad settings) or 1 (a failed run); {DEBUG_FLAG} or {DEBUG_ENV}=1 adds the "
    "traceback."
)
SUBCOMMAND_DESCRIPTIONS = {
    "fit": "Train or fine-tune MattingModule on VideoMattingDataModule's clips (synthetic or matting "
    "datasets); validation videos and metrics go to the loggers and to VideoWriterCallback's output_dir.",
    "validate": "Run one validation epoch: the metrics, and validation videos from a VideoWriterCallback.",
    "test": "Lightning's test loop: needs a model with a test_step.",
    "predict": "Matte videos, image folders or synthetic clips (data.sources, data.backgrounds for "
    "BackgroundMattingV2) with MattingModule and write the outputs through the VideoWriterCallbacks in "
    "trainer.callbacks: <output_dir>/<video>/<output>.<ext>, in segments that --resume=true continues "
    "after an interruption.",
}
SUBCOMMAND_HELP = {
    "fit": "train or fine-tune a model",
    "validate": "one validation epoch: metrics and validation videos",
    "test": "Lightning's test loop (a model with a test_step)",
    "predict": "matte videos and write the outputs",
}
# argparse's usage lists every option (about a hundred lines) before the description: this one does not.
SUBCOMMAND_USAGE = "%(prog)s [-h] [-c CONFIG] [--print_config] [--key=value ...]"


class SaveConfigExceptPredict(SaveConfigCallback):
    """Saves the run's config.yaml for fit/validate/test; predict writes only the videos it was asked for."""

    def setup(self, trainer, pl_module, stage: str) -> None:  # noqa: ANN001 - Lightning's signature
        if stage != "predict":
            super().setup(trainer, pl_module, stage)


class MattingCLI(LightningCLI):
    """LightningCLI whose `predict` defaults to `return_predictions: false` (videos go to the writers) and
    takes `--resume=true`: continue an interrupted predict run (sets VideoWriterCallback.resume). A setting
    refused while the config is parsed or its classes are made raises `SettingsError` (or argparse's
    ArgumentError: the parsers do not exit); so does a setting at its old flat key (`moved_settings`). Lines `console` holds are shown once the run starts."""

    def __init__(self, *args, console: HeldConsole, **kwargs) -> None:  # noqa: ANN002, ANN003 - LightningCLI's
        self.console = console
        super().__init__(*args, **kwargs)

    def setup_parser(self, add_subcommands: bool, main_kwargs: dict, subparser_kwargs: dict) -> None:
        super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
        for (
            choice
        ) in self.parser._subcommands_action._choices_actions:  # the list in --help: ours, not the Trainer's
            choice.help = SUBCOMMAND_HELP[choice.dest]
        self.parser.add_argument(
            "--version", action="version", version=f"{PROG} {lightning_matting.__version__}"
        )

    def _prepare_subcommand_parser(self, klass, subcommand, **kwargs):  # noqa: ANN001 - Lightning's signature
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "predict":
            parser.set_defaults({"return_predictions": False, "trainer.logger": False})
            parser.add_argument(
                "--resume", type=bool, default=False, help="continue an interrupted run where it stopped"
            )
        return parser

    def parse_arguments(self, parser, args) -> None:  # noqa: ANN001 - Lightning's signature
        # `args` are always given (no warning about sys.argv): a list, or a config such as `matte` builds
        try:
            check_moved_settings(args)
        except ValueError as error:
            raise SettingsError(str(error)) from error
        self.config = parser.parse_object(args) if isinstance(args, dict) else parser.parse_args(args)

    def before_instantiate_classes(self) -> None:
        self.parser.add_instantiator(_callback_naming_its_errors, Callback)

    def instantiate_classes(self) -> None:
        """Make the config's classes; a setting refused by a class's __init__, or an output name of a
        VideoWriterCallback that MattingModule has no such output for, raises `SettingsError`."""
        try:
            super().instantiate_classes()
            for writer in self.trainer.callbacks:
                for name in writer.outputs if isinstance(writer, VideoWriterCallback) else ():
                    check_choice("outputs of VideoWriterCallback", name, OUTPUTS)
        except Exception as error:  # a class's __init__ (model, data, callbacks, Trainer) refused a setting
            raise SettingsError(reason(error)) from error

    def instantiate_trainer(self, **kwargs):  # noqa: ANN003, ANN201 - Lightning's signature
        trainer = super().instantiate_trainer(**kwargs)
        trainer.callbacks.append(ReleaseAtRunStart(self.console))
        return trainer

    def before_predict(self) -> None:
        """A run without a VideoWriterCallback gets one (com and pha under outputs/) and says so; `--resume=true`
        sets every writer's `resume`."""
        writers = [cb for cb in self.trainer.callbacks if isinstance(cb, VideoWriterCallback)]
        if not writers:
            writers = [VideoWriterCallback()]
            self.trainer.callbacks.append(writers[0])
            rank_zero_info(
                "no VideoWriterCallback in trainer.callbacks: writing com and pha to outputs/ (add "
                "--trainer.callbacks+=VideoWriterCallback with its output_dir, outputs and codec to choose)"
            )
        for writer in writers:
            writer.resume = writer.resume or bool(self.config["predict"].get("resume"))


def _callback_naming_its_errors(class_type: type[Callback], *args: Any, **kwargs: Any) -> Callback:
    """A callback of the config (jsonargparse's instantiator); a setting its __init__ refuses raises a
    SettingsError naming the class."""
    try:
        return class_type(*args, **kwargs)
    except Exception as error:
        message = reason(error)
        named = message.startswith(f"{class_type.__name__}: ")
        raise SettingsError(message if named else f"{class_type.__name__}: {message}") from error


def main(args: list[str] | None = None) -> None:
    """Entry point of the `lightning-matting` console script: exits with 0, 1 (a failed run) or 2 (bad
    settings), a failure reported as one paragraph on stderr (`--debug` or LIGHTNING_MATTING_DEBUG=1: with
    its traceback). Besides LightningCLI's subcommands: `matte`, `demo` (predict with the demo preset, any
    further arguments added) and `weights`; `--config` takes a packaged preset's name (`lightning_matting.presets`)."""
    args = list(sys.argv[1:] if args is None else args)
    debug = DEBUG_FLAG in args or os.environ.get(DEBUG_ENV, "0") not in ("", "0")
    args = [arg for arg in args if arg != DEBUG_FLAG]
    if args[:1] == ["weights"]:
        raise SystemExit(weights_cli.main(args[1:]))
    if args[:1] == ["matte"]:
        status = run_reporting_errors(lambda: _matte(args[1:], quiet_setup=not debug), debug)
    else:
        if args[:1] == ["demo"]:
            args = ["predict", "--config", "demo", *args[1:]]
        status = run_reporting_errors(lambda: _run_lightning_cli(args, quiet_setup=not debug), debug)
    if status:
        sys.exit(status)


def _run_lightning_cli(args: list[str], quiet_setup: bool) -> None:
    """MattingCLI over command-line `args` whose `--config` may name a preset."""
    try:
        args = resolve_config_arguments(args)
    except ValueError as error:
        raise SettingsError(str(error)) from error
    _lightning_cli(args, quiet_setup)


def run_cli(config: dict[str, Any]) -> MattingCLI:
    """MattingCLI run on `config` ({"subcommand": ..., <subcommand>: {...}}), its errors raised as they are."""
    return _lightning_cli(config, quiet_setup=False)


def _matte(arguments: list[str], quiet_setup: bool) -> None:
    """`lightning-matting matte`: its predict config run, or printed (`--print_config`)."""
    try:
        config, print_only = matte_command.config_from_arguments(arguments)
    except ValueError as error:
        raise SettingsError(str(error)) from error
    if print_only:
        print(yaml.safe_dump(config["predict"], sort_keys=False), end="")
    else:
        _lightning_cli(config, quiet_setup)


def _lightning_cli(args: list[str] | dict[str, Any], quiet_setup: bool) -> MattingCLI:
    """MattingCLI over `args` (a command line or a config); `quiet_setup`: Lightning's set-up lines wait for the
    run to start."""
    parser_kwargs = {"prog": PROG, "description": DESCRIPTION, "exit_on_error": False}
    for subcommand, description in SUBCOMMAND_DESCRIPTIONS.items():
        parser_kwargs[subcommand] = {
            "description": description,
            "usage": SUBCOMMAND_USAGE,
            "exit_on_error": False,
        }
    with held_console(quiet_setup) as console:
        return MattingCLI(
            MattingModule,
            VideoMattingDataModule,
            save_config_callback=SaveConfigExceptPredict,
            save_config_kwargs={"overwrite": True},
            parser_kwargs=parser_kwargs,
            args=args,
            console=console,
        )


if __name__ == "__main__":
    main()
