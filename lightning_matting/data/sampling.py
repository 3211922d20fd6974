"""Batches of consecutive frames of one video at a time, for writers and recurrent models."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from itertools import accumulate
from typing import Any

import torch
from torch.utils.data import BatchSampler, DistributedSampler, Sampler, default_collate

from lightning_matting.data.batch import MattingBatch
from lightning_matting.data.readers import frame_to_float
from lightning_matting.run.frame_ranges import FrameRanges
from lightning_matting.validators import check_int

_STATIC_FIELDS = ("bgr", "tgt")  # per-frame fields that are often one image for the whole video
_FRAME_FIELDS = ("src", "bgr", "tgt")  # turned into floats by `to_float`


def splits_videos(num_videos: int, world_size: int) -> bool:
    """Whether `world_size` ranks share each video (fewer videos than ranks) rather than take whole videos."""
    return num_videos < world_size


def _check_todo(todo: Sequence[Sequence[range]], lengths: Sequence[int]) -> list[list[range]]:
    if len(todo) != len(lengths) or any(
        not isinstance(frames, range)
        or frames.step != 1
        or not 0 <= frames.start <= frames.stop <= n
        or (k and frames.start < video[k - 1].stop)
        for video, n in zip(todo, lengths, strict=True)
        for k, frames in enumerate(video)
    ):
        raise ValueError(
            "ranges must give, per video, sorted disjoint ranges of frames within [0, frames] (lengths "
            f"{list(lengths)!r}), got {[list(video) for video in todo]!r}"
        )
    return [[frames for frames in video if len(frames)] for video in todo]


def frame_ranges(
    lengths: Sequence[int], world_size: int, todo: Sequence[Sequence[range]] | None = None
) -> list[list[list[range]]]:
    """The frames each rank predicts: `ranges[rank][video]`, sorted disjoint ranges of frame indices.

    At least as many videos as ranks: whole videos (the frames of `todo` in each), each to the rank with the
    fewest frames so far, most frames first (ties: lower video index, then lower rank), so ranks are balanced
    and write their own files. Fewer videos: the frames of each video's `todo` are cut into `world_size`
    consecutive shares of near-equal size, rank r getting the r-th. Either way every frame of `todo` (default:
    every frame; a resumed run: those not yet written) belongs to exactly one rank, none twice.
    """
    check_int("world_size", world_size, minimum=1)
    todo = [[range(n)] for n in lengths] if todo is None else _check_todo(todo, lengths)
    ranges: list[list[list[range]]] = [[[] for _ in lengths] for _ in range(world_size)]
    counts = [sum(len(frames) for frames in video) for video in todo]
    if splits_videos(len(lengths), world_size):
        for video, frames_todo in enumerate(todo):
            for rank, share in enumerate(FrameRanges(frames_todo).shares(world_size)):
                ranges[rank][video] = list(share)
        return ranges
    load = [0] * world_size
    for video in sorted(range(len(lengths)), key=lambda v: (-counts[v], v)):
        rank = min(range(world_size), key=lambda r: (load[r], r))
        ranges[rank][video] = list(todo[video])
        load[rank] += counts[video]
    return ranges


class VideoBatchSampler(BatchSampler):
    """Lists of dataset indices: consecutive frames of one video, in order, never two videos in one batch.

    The dataset holds videos of `lengths` frames end to end (like `MultiVideoDataset`); each video's frames
    are cut into batches of `batch_size` frames, its last batch possibly shorter. Nothing is shuffled or
    dropped.

    Args:
        lengths: Frames per video.
        batch_size: Frames per batch (at most).
        ranges: The frames of each video to give, as sorted disjoint ranges per video (default: all): a resumed
            run gives those not yet written, a distributed process its share (`frame_ranges(...)[rank]`).
        warmup: Recurrent models: a range that starts mid-video is preceded by up to `warmup` frames before
            it (from the end of the video's previous range when that is nearer: the state carries on), in
            batches of their own, to build the state; `written` gives the frames to write (the others are
            warm-up, see `collate_frames`).
        sampler: Set by Lightning when it rebuilds the loader (made in a `*_dataloader` hook, it is a
            `BatchSampler` whose arguments Lightning keeps). Under `strategy="ddp"` it is a
            `DistributedSampler`: without `ranges`, this process then takes its share of the videos
            (`frame_ranges` for its rank and the number of processes), so validation is split across
            ranks like Lightning's own loaders; with `ranges` (predict plans its shares) it is ignored.
        drop_last: Must be False: no frame is ever dropped (Lightning passes False when predicting).

    Raises:
        ValueError: A bad length, batch size, range or warm-up, naming it.

    Example::

        sampler = VideoBatchSampler([v.num_frames for v in dataset.videos], batch_size=4)
        loader = DataLoader(dataset, batch_sampler=sampler)
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        ranges: Sequence[range] | None = None,
        warmup: int = 0,
        sampler: Sampler | None = None,
        drop_last: bool = False,
    ) -> None:
        if drop_last:
            raise ValueError("drop_last must be False: VideoBatchSampler gives every frame of its ranges")
        check_int("batch_size", batch_size, minimum=1)
        for video, n in enumerate(lengths):
            check_int(f"lengths[{video}] (frames of video {video})", n, minimum=0)
        if ranges is None and isinstance(sampler, DistributedSampler):
            ranges = frame_ranges(list(lengths), sampler.num_replicas)[sampler.rank]
        ranges = [[range(n)] for n in lengths] if ranges is None else _check_todo(ranges, lengths)
        check_int("warmup (frames before a range's start)", warmup, minimum=0)
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.warmup = warmup
        self.ranges = ranges

    @property
    def written(self) -> list[list[range]]:
        """The frames of each video predicted for writing; the other frames given are warm-up."""
        return self.ranges

    def _runs(self) -> Iterator[tuple[int, range]]:
        """(video, frames) of each run of batches: a warm-up before a range that starts mid-video, the range."""
        for video, ranges in enumerate(self.ranges):
            previous_stop = None
            for frames in ranges:
                if frames.start > 0 and self.warmup:
                    first = max(0, frames.start - self.warmup)
                    if previous_stop is not None and previous_stop >= first:
                        first = previous_stop  # the state carries on from the previous range
                    if first < frames.start:
                        yield video, range(first, frames.start)
                yield video, frames
                previous_stop = frames.stop

    def __iter__(self) -> Iterator[list[int]]:
        offsets = [0, *accumulate(self.lengths)]  # each video's first dataset index
        for video, run in self._runs():
            for first in range(run.start, run.stop, self.batch_size):
                last = min(first + self.batch_size, run.stop)
                yield list(range(offsets[video] + first, offsets[video] + last))

    def __len__(self) -> int:
        return sum(math.ceil(len(run) / self.batch_size) for _, run in self._runs())


def collate_frames(
    items: list[dict[str, Any]],
    written: Mapping[str, Sequence[range]] | None = None,
    to_float: bool = False,
    share_static: bool = True,
) -> MattingBatch:
    """Collate dataset items into a `MattingBatch`; a plate or target that is one tensor for every item is sent once.

    Args:
        items: Dataset items {"src", "index", "video", and "bgr", "tgt", "pha", "fgr", "aligned" where given}
            (see `MattingVideoDataset`).
        written: {video: ranges of frames written} (see `VideoBatchSampler.written`): a batch holding other
            frames gets `warmup`, True for those (predicted for the state, not written).
        to_float: Turn integer frames (uint8, or uint16 from deep sources) into float32 in [0,1] here, in the
            DataLoader worker: for a model on the CPU, where converting in the main process would hold up the
            model (on a GPU the module converts).
        share_static: A `bgr` or `tgt` that is the same tensor in every item becomes [1,C,H,W] instead of
            [B,C,H,W], listed in `static`, so that a static plate crosses to the device once per video. False
            (training): every field has B samples.

    Returns:
        The batch.

    Raises:
        ValueError: Items whose fields do not make a `MattingBatch`, naming the field.
    """
    shared = tuple(
        key
        for key in _STATIC_FIELDS
        if share_static and key in items[0] and all(item[key] is items[0][key] for item in items)
    )
    fields = default_collate([{k: v for k, v in item.items() if k not in shared} for item in items])
    for key in shared:
        fields[key] = items[0][key].unsqueeze(0)
    for key in _FRAME_FIELDS if to_float else ():
        if key in fields and fields[key].dtype in (torch.uint8, torch.uint16):
            fields[key] = frame_to_float(fields[key])
    if written is not None:
        warmup = torch.tensor(
            [not any(item["index"] in frames for frames in written.get(item["video"], ())) for item in items]
        )
        if warmup.any():
            fields["warmup"] = warmup
    return MattingBatch(**fields, static=shared)
