"""`matte`: the common case (these inputs, this model, these outputs) as the predict run it stands for.

`lightning-matting matte` and `lightning_matting.matte(...)` build one predict config and run it through the
same `MattingCLI` as `lightning-matting predict --config ...`: the same `MattingModule`, `VideoMattingDataModule`,
`VideoWriterCallback` and Trainer. `--print_config` prints that config as YAML, a starting point for a file of
one's own.
"""

from __future__ import annotations

import argparse
import glob
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning_matting.data.datasets import parse_colour
from lightning_matting.live_sources import is_live_source
from lightning_matting.models.loading import VARIANTS

WRITER = "lightning_matting.callbacks.VideoWriterCallback"
STREAMER = "lightning_matting.callbacks.LiveStreamCallback"
_GLOB_CHARACTERS = "*?["


def expand_inputs(inputs: Sequence[str]) -> list[str]:
    """The sources named by `inputs`: files, image folders and live sources as given, globs expanded in sorted order.

    Args:
        inputs: Paths (video files, image folders), glob patterns such as `shots/*.mp4`, and live sources (a URL
            such as udp://127.0.0.1:9000, '-' for standard input, /dev/videoN), which are never globbed.

    Returns:
        The source paths, in the order given (each glob's matches sorted).

    Raises:
        ValueError: No input, or a glob that matches nothing (naming it).
    """
    if not inputs:
        raise ValueError(
            "matte: give at least one INPUT (a video file, an image folder or a glob such as '*.mp4')"
        )
    sources: list[str] = []
    for item in inputs:
        if (
            not is_live_source(item)
            and any(character in item for character in _GLOB_CHARACTERS)
            and not Path(item).exists()
        ):
            matches = sorted(glob.glob(item))
            if not matches:
                raise ValueError(f"matte: the input pattern {item!r} matches no file or folder")
            sources += matches
        else:
            sources.append(item)
    return sources


def predict_config(
    inputs: Sequence[str],
    model: str,
    checkpoint: str | None = "official",
    backgrounds: Sequence[str] | None = None,
    output: str = "outputs",
    outputs: Sequence[str] = ("com", "pha"),
    codec: str | None = None,
    target: str | None = None,
    devices: int | str = 1,
    batch_size: int = 4,
    overwrite: bool = False,
    resume: bool = False,
    realtime: bool = False,
    streams: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The predict config (as `lightning-matting predict --config` reads it) of one `matte` call.

    Args:
        inputs: Video files, image folders and globs (see `expand_inputs`).
        model: A variant name (`lightning_matting.VARIANTS`) or a TorchScript file.
        checkpoint: "official" (the project's published weights, downloaded once into torch hub's cache), an
            http(s) URL, a path, or None (untrained weights).
        backgrounds: BackgroundMattingV2's plates: one per input, or one for every input.
        output: The output folder; each video's files go to `<output>/<video>/`.
        outputs: The outputs to write (com, pha, fgr, err, ref, seg).
        codec: A PyAV codec preset (h264, hevc, prores4444, vp9, ffv1); None: the writer's default.
        target: com's background: a colour "#RRGGBB", an image or a video.
        devices: Lightning's devices (a count, or "auto").
        batch_size: Consecutive frames per step (RVM: its T).
        overwrite: Replace existing outputs.
        resume: Continue an interrupted run of the same command.
        realtime: A live input: keep only the latest frames when the model falls behind (bounded latency).
        streams: {output: URL} streamed live as well (`LiveStreamCallback`), such as {"pha": "udp://127.0.0.1:9000"}.

    Returns:
        {"subcommand": "predict", "predict": {"trainer": ..., "model": ..., "data": ...}}.

    Raises:
        ValueError: No input, a glob matching nothing, or a number of backgrounds other than 1 or one per input.

    Example:
        >>> config = predict_config(["interview.mp4"], "rvm-mobilenetv3", outputs=["pha"])
        >>> config["predict"]["model"], config["predict"]["data"]
        ({'model': 'rvm-mobilenetv3', 'checkpoint': 'official'}, {'sources': ['interview.mp4'], 'batch_size': 4})
    """
    sources = expand_inputs(inputs)
    plates = list(backgrounds or [])
    if len(plates) == 1 and len(sources) > 1:
        plates *= len(sources)
    if plates and len(plates) != len(sources):
        raise ValueError(
            f"matte: --background takes one plate for every input or one per input; got {len(plates)} plates "
            f"for {len(sources)} inputs"
        )
    writer = {"output_dir": output, "outputs": list(outputs), "overwrite": overwrite, "resume": resume}
    if codec is not None:
        writer["codec"] = codec
    data: dict[str, Any] = {"sources": sources, "batch_size": batch_size}
    if plates:
        data["backgrounds"] = plates
    if target is not None:  # a colour as numbers: the config parser reads a str "#RRGGBB" as a YAML comment
        try:
            data["target"] = list(parse_colour(target)) if target.startswith("#") else target
        except ValueError as error:
            raise ValueError(f"matte: --target {target!r}: {error}") from error
    if realtime:
        data["live"] = {"realtime": True}
    callbacks = [{"class_path": WRITER, "init_args": writer}]
    if streams:
        callbacks.append({"class_path": STREAMER, "init_args": {"streams": dict(streams)}})
    return {
        "subcommand": "predict",
        "predict": {
            "trainer": {
                "accelerator": "auto",
                "devices": devices,
                "logger": False,
                "callbacks": callbacks,
            },
            "model": {"model": model, "checkpoint": checkpoint},
            "data": data,
        },
    }


def matte(inputs: str | Sequence[str], model: str, **options: Any) -> dict[str, dict[str, Path]]:
    """Matte videos or image folders with one model and write the outputs; `lightning-matting matte` in Python.

    Args:
        inputs: A path or glob, or a list of them (video files, image folders).
        model: A variant name (`lightning_matting.VARIANTS`) or a TorchScript file.
        **options: The keyword arguments of `predict_config` (checkpoint, backgrounds, output, outputs, codec,
            target, devices, batch_size, overwrite, resume, realtime, streams).

    Returns:
        The written files: {video: {output: path}}.

    Raises:
        ValueError: A bad argument, naming it (see `predict_config` and the classes it configures).

    Example:
        >>> matte("interview.mp4", "rvm-mobilenetv3")  # your footage, official weights  # doctest: +SKIP
        {'interview': {'com': PosixPath('outputs/interview/com.mp4'), 'pha': ...}}
    """
    from lightning_matting.callbacks import VideoWriterCallback
    from lightning_matting.cli import run_cli

    config = predict_config([inputs] if isinstance(inputs, str) else list(inputs), model, **options)
    cli = run_cli(config)
    writers = [callback for callback in cli.trainer.callbacks if isinstance(callback, VideoWriterCallback)]
    return writers[0].written


def parser() -> argparse.ArgumentParser:
    """The arguments of `lightning-matting matte`."""
    matte_parser = argparse.ArgumentParser(
        prog="lightning-matting matte",
        description="Matte videos or image folders with one model and write the outputs as video. The run is "
        "`lightning-matting predict` with the config that --print_config shows.",
    )
    matte_parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="video files, image folders or globs; or one live source: a URL (udp://, tcp://, rtsp://, ...), "
        "- (standard input) or /dev/videoN",
    )
    matte_parser.add_argument(
        "--model", required=True, help=f"a variant ({', '.join(VARIANTS)}) or a TorchScript file"
    )
    matte_parser.add_argument(
        "--checkpoint",
        default="official",
        help="official (downloaded once into torch hub's cache), an http(s) URL, or a path (default: official)",
    )
    matte_parser.add_argument(
        "--background", nargs="+", default=None, metavar="PLATE", help="BGMv2's plates: one, or one per input"
    )
    matte_parser.add_argument("--output", default="outputs", help="output folder (default: outputs)")
    matte_parser.add_argument(
        "--outputs",
        default="com,pha",
        help="comma-separated: com, pha, fgr, err, ref, seg (default: com,pha)",
    )
    matte_parser.add_argument(
        "--codec", default=None, help="h264, hevc, prores4444, vp9 or ffv1 (extra [av])"
    )
    matte_parser.add_argument("--target", default=None, help="com's background: #RRGGBB, an image or a video")
    matte_parser.add_argument(
        "--devices", default="1", help="devices to run on: a count or auto (default: 1)"
    )
    matte_parser.add_argument("--batch-size", type=int, default=4, help="frames per step (default: 4)")
    matte_parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    matte_parser.add_argument("--resume", action="store_true", help="continue an interrupted run")
    matte_parser.add_argument(
        "--realtime",
        action="store_true",
        help="a live input: keep only the latest frames when the model falls behind (bounded latency)",
    )
    matte_parser.add_argument(
        "--stream",
        action="append",
        default=[],
        metavar="OUTPUT=URL",
        help="also stream an output live, such as pha=udp://127.0.0.1:9000 (udp://, tcp://, srt://, rtmp://, - "
        "for standard output, /dev/videoN); repeatable",
    )
    matte_parser.add_argument(
        "--print_config", action="store_true", help="print the equivalent predict config (YAML) and exit"
    )
    return matte_parser


def _flags_as_predict_spells_them(arguments: Sequence[str]) -> list[str]:
    """`arguments` with `--resume=true|false` and `--overwrite=true|false` (predict's spelling, which its
    messages give) as the flags `--resume` and `--overwrite`, or without them."""
    spelled = []
    for argument in arguments:
        flag, equals, value = argument.partition("=")
        if flag in ("--resume", "--overwrite") and equals and value.lower() in ("true", "false"):
            spelled += [flag] if value.lower() == "true" else []
        else:
            spelled.append(argument)
    return spelled


def config_from_arguments(arguments: Sequence[str]) -> tuple[dict[str, Any], bool]:
    """The predict config of `lightning-matting matte` arguments, and whether to print it instead of running.

    Raises:
        SystemExit: argparse's usage error (status 2) for unknown or missing arguments.
        ValueError: As `predict_config`.
    """
    parsed = parser().parse_args(_flags_as_predict_spells_them(arguments))
    devices = int(parsed.devices) if parsed.devices.isdigit() else parsed.devices
    config = predict_config(
        parsed.inputs,
        parsed.model,
        checkpoint=None if parsed.checkpoint.lower() == "none" else parsed.checkpoint,
        backgrounds=parsed.background,
        output=parsed.output,
        outputs=[name.strip() for name in parsed.outputs.split(",") if name.strip()],
        codec=parsed.codec,
        target=parsed.target,
        devices=devices,
        batch_size=parsed.batch_size,
        overwrite=parsed.overwrite,
        resume=parsed.resume,
        realtime=parsed.realtime,
        streams=parse_streams(parsed.stream),
    )
    return config, parsed.print_config


def parse_streams(arguments: Sequence[str]) -> dict[str, str]:
    """`--stream OUTPUT=URL` arguments as {output: URL}.

    Raises:
        ValueError: An argument without `=`, an empty side, or an output given twice, naming it.
    """
    streams: dict[str, str] = {}
    for argument in arguments:
        name, equals, url = argument.partition("=")
        if not equals or not name.strip() or not url.strip() or name.strip() in streams:
            problem = "gives an output twice" if name.strip() in streams else "is not OUTPUT=URL"
            raise ValueError(
                f"matte: --stream {argument!r} {problem}: give one output and where it goes, such as "
                "--stream pha=udp://127.0.0.1:9000 (repeat --stream for more outputs)"
            )
        streams[name.strip()] = url.strip()
    return streams
