"""What any step returned, as runs of named frames of one video each: the contract VideoWriterCallback writes.

A step may return a Tensor [B,C,H,W] (or [B,T,C,H,W], a time run written in order), a tuple/list of them
(named by position), or a mapping {name: Tensor}; `select(outputs, batch)` covers any other structure.
"video" in the step's output (a mapping) or in the batch (a mapping, or a `MattingBatch`'s `video`) names the
video of each frame: a str, or one str per sample. "index" (LongTensor [B]) in the step's output gives the
frames' indices in their video. Frames of the batch itself (a compare video's input and ground truth) are
taken by key: a mapping's key, a dataclass's field or a sequence's position.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lightning_matting.data.batch import MattingBatch
from lightning_matting.full_scale import FULL_SCALE
from lightning_matting.video_names import check_video_name

Select = Callable[[Any, Any], Mapping[str, Tensor]]
CHANNELS = (1, 3, 4)  # grey, RGB, RGBA


@dataclass(frozen=True)
class FrameRun:
    """Consecutive frames of one video from one step.

    Args:
        video: The video's name; None when neither the step's output nor the batch names one.
        frames: {output name: [N,C,H,W]} with C in (1, 3, 4), the same N for every name.
        first_index: The index of the first frame in its video, when the step's output gives "index".
    """

    video: str | None
    frames: dict[str, Tensor]
    first_index: int | None


def gives_no_frames(outputs: Any) -> bool:
    """Whether a step returned no frames by a common habit: None, a loss (a 0-dim Tensor), or a mapping of only
    "loss"."""
    if isinstance(outputs, Mapping):
        return set(outputs) <= {"loss"}
    return outputs is None or (isinstance(outputs, Tensor) and outputs.dim() == 0)


def compare_sources(
    batch: Any, keys: tuple[str | int, str | int] | None
) -> tuple[dict[str, str | int], dict[str, str | int]]:
    """The batch's keys of a compare video's input and ground truth, as `extra` of `step_runs`.

    Args:
        batch: The step's batch.
        keys: (input, ground truth) keys the user named; None: ("src", "pha") for a mapping or dataclass
            batch, (0, 1) for any other.

    Returns:
        ({"<input>": key, "<truth>": key} to take, {name: default key} the batch lacks): named keys are all
        taken (`step_runs` refuses one the batch lacks); a default the batch lacks is left out.
    """
    named = isinstance(batch, Mapping) or dataclasses.is_dataclass(batch)
    chosen = dict(zip(("<input>", "<truth>"), keys or (("src", "pha") if named else (0, 1)), strict=True))
    if keys is not None:
        return chosen, {}
    lacking = {name: key for name, key in chosen.items() if not has_item(batch, key)}
    return {name: key for name, key in chosen.items() if name not in lacking}, lacking


def step_runs(
    outputs: Any,
    batch: Any,
    names: Sequence[str],
    select: Select | None = None,
    extra: Mapping[str, str | int] | None = None,
) -> list[FrameRun]:
    """Split one step's output into runs of frames of one video, in order.

    Args:
        outputs: What the step returned.
        batch: The step's batch.
        names: The outputs to take.
        select: `select(outputs, batch) -> {name: Tensor}` instead of taking `names` from `outputs`.
        extra: {name: key in the batch} of frames taken from the batch as well (a compare layout's input and
            ground truth): a mapping's key, a dataclass's field or a sequence's position.

    Returns:
        The runs of frames, each of one video; none when the step's output holds no frame.

    Raises:
        ValueError: The step returned None or no tensor, a name is missing (the available keys are named),
            a key of `extra` is not in the batch, a tensor is not [B,C,H,W] or [B,T,C,H,W] with 1, 3 or 4
            channels, or the tensors differ in frames.
        TypeError: A video name is not a str.
    """
    if outputs is None:
        raise ValueError(
            "VideoWriterCallback: the step returned None; return the frames to write: a Tensor [B,C,H,W], a "
            "tuple of them, or a mapping {name: Tensor} (or give select=)"
        )
    if select is not None:
        chosen = select(outputs, batch)
        if not isinstance(chosen, Mapping):
            raise ValueError(
                f"VideoWriterCallback: select(outputs, batch) must return a mapping {{name: Tensor}}, got "
                f"{type(chosen).__name__}"
            )
        frames = _take(chosen, names, "select(outputs, batch)")
    else:
        frames = _take(outputs, names, "the step's output")
    for name, key in (extra or {}).items():
        if not has_item(batch, key):
            raise ValueError(
                f"VideoWriterCallback: compare_keys names {key!r}, which the batch lacks ({_describe(batch)}); "
                "give compare_keys=(input key, ground-truth key) of the batch"
            )
        frames[name] = _as_frames(_batch_item(batch, key), f"batch[{key!r}]")
    counts = {name: len(tensor) for name, tensor in frames.items()}
    if len(set(counts.values())) > 1:
        raise ValueError(f"VideoWriterCallback: the frames to write differ in number: {counts}")
    count = next(iter(counts.values()))
    videos = _frame_videos(outputs, batch, count)
    index = outputs.get("index") if isinstance(outputs, Mapping) else None
    runs = []
    start = 0
    while start < count:
        stop = start + 1
        while stop < count and videos[stop] == videos[start]:
            stop += 1
        runs.append(
            FrameRun(
                videos[start],
                {name: tensor[start:stop] for name, tensor in frames.items()},
                None if index is None else int(index[start]),
            )
        )
        start = stop
    return runs


def _take(source: Any, names: Sequence[str], what: str) -> dict[str, Tensor]:
    if isinstance(source, Tensor):
        if len(names) != 1:
            raise ValueError(
                f"VideoWriterCallback: {what} is one Tensor but outputs names {len(names)} ({list(names)}); "
                "return a tuple or a mapping, or give one output name"
            )
        return {names[0]: _as_frames(source, what)}
    if isinstance(source, tuple | list):
        if len(source) < len(names) or not all(isinstance(item, Tensor) for item in source[: len(names)]):
            raise ValueError(
                f"VideoWriterCallback: {what} is a {type(source).__name__} of "
                f"{[type(item).__name__ for item in source]}; outputs {list(names)} take its first "
                f"{len(names)} item(s) by position, which must be Tensors"
            )
        return {
            name: _as_frames(item, f"{what}[{k}]")
            for k, (name, item) in enumerate(zip(names, source[: len(names)], strict=True))
        }
    if isinstance(source, Mapping):
        missing = [name for name in names if name not in source]
        if missing:
            raise ValueError(
                f"VideoWriterCallback: outputs {missing} are not in {what}; its keys are {sorted(map(str, source))}"
            )
        return {name: _as_frames(source[name], f"{what}[{name!r}]") for name in names}
    raise ValueError(
        f"VideoWriterCallback: {what} is a {type(source).__name__}; return a Tensor [B,C,H,W], a tuple of them, "
        "or a mapping {name: Tensor} (or give select=)"
    )


def _as_frames(value: Any, what: str) -> Tensor:
    """[B,C,H,W] as is; [B,T,C,H,W] as [B*T,C,H,W] (sample after sample, time in order)."""
    if not isinstance(value, Tensor) or value.dim() not in (4, 5) or value.shape[-3] not in CHANNELS:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(
            f"VideoWriterCallback: {what} must be a Tensor [B,C,H,W] or [B,T,C,H,W] with C = 1 (grey), 3 (RGB) "
            f"or 4 (RGBA), got {shape}"
        )
    return value.flatten(0, 1) if value.dim() == 5 else value


def has_item(batch: Any, key: str | int) -> bool:
    """Whether the batch holds `key`: a mapping's key, a dataclass's field (str) or a sequence's position (int)."""
    if isinstance(batch, Mapping):
        return key in batch
    if isinstance(key, str):
        return dataclasses.is_dataclass(batch) and key in {field.name for field in dataclasses.fields(batch)}
    return isinstance(batch, Sequence) and not isinstance(batch, str) and -len(batch) <= key < len(batch)


def _batch_item(batch: Any, key: str | int) -> Any:
    if isinstance(batch, Mapping) or not isinstance(key, str):
        return batch[key]
    return getattr(batch, key)


def _describe(batch: Any) -> str:
    """What a batch holds, for a message: its keys, fields or length."""
    if isinstance(batch, Mapping):
        return f"a {type(batch).__name__} with keys {sorted(map(str, batch))}"
    if dataclasses.is_dataclass(batch):
        return f"a {type(batch).__name__} with fields {[field.name for field in dataclasses.fields(batch)]}"
    if isinstance(batch, Sequence):
        return f"a {type(batch).__name__} of {len(batch)} items"
    return f"a {type(batch).__name__}"


def _frame_videos(outputs: Any, batch: Any, count: int) -> list[str | None]:
    """The video of each frame: "video" of the step's output, else of the batch, else None."""
    named = [source.get("video") for source in (outputs, batch) if isinstance(source, Mapping)]
    named += [batch.video] if isinstance(batch, MattingBatch) else []
    for value in named:
        if value is not None:
            names = list(value) if isinstance(value, list | tuple) else [value]
            for name in names:
                check_video_name(name)
            if not names or count % len(names):
                raise ValueError(
                    f"VideoWriterCallback: 'video' must be a str or one str per sample, got {value!r} "
                    f"for {count} frames"
                )
            repeat = count // len(names)  # one name per sample of a [B,T,...] run
            return [name for name in names for _ in range(repeat)]
    return [None] * count


def tile(frames: Mapping[str, Tensor]) -> Tensor:
    """Frames side by side, left to right in order: [N,3,H,W*k]; grey shown as grey, alpha dropped, each
    resized (bilinear) to the first one's height and width."""
    tiles = []
    for tensor in frames.values():
        tensor = tensor.detach()
        tensor = (
            tensor.float().div(FULL_SCALE[torch.uint8]) if tensor.dtype == torch.uint8 else tensor.float()
        )
        tensor = tensor.expand(-1, 3, -1, -1) if tensor.shape[1] == 1 else tensor[:, :3]
        if tiles and tensor.shape[-2:] != tiles[0].shape[-2:]:
            tensor = torch.nn.functional.interpolate(tensor, size=tiles[0].shape[-2:], mode="bilinear")
        tiles.append(tensor.to(tiles[0].device) if tiles else tensor)
    return torch.cat(tiles, dim=-1)
