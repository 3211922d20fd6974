"""Every rank's validation frames on rank zero, in the order of the dataset, for VideoWriterCallback.

Under a distributed strategy each rank validates its share of the samples: Lightning's DistributedSampler
(every world_size-th index, the first ones repeated to even out the shares) or a batch sampler of the
loader's own (VideoBatchSampler: whole clips, or contiguous ranges of a clip). `ValidationGather` brings
rank zero, which writes the validation videos, every rank's frames:

- at the epoch's start, each rank reads the dataset indices of its batches from its loader's batch sampler
  (iterated twice: both passes must give the same batches) and the ranks share them;
- after each batch, the ranks share the index and video of each of their samples and all choose the same
  samples to write: an index the first time it comes (a padding repeat is dropped), of a video among the
  first `val_videos` to come. Only those frames travel, as uint8 on the host, to rank zero;
- rank zero holds a frame back until every lower index of the epoch has come, then returns it: each video
  in index order. A rank with fewer batches takes part in the others' last rounds after its last batch.

Where the indices cannot be known (an IterableDataset, a loader without a batch sampler, a sampler of the
user's, which Lightning wraps in a DistributedSamplerWrapper that a pass of ours would make draw anew for
the loop too, or a batch sampler that gives other batches at each pass), nothing is gathered: rank zero
writes its own share and warns once that its videos hold that share only.

torch.distributed's object collectives carry the data: with gloo on the host, with NCCL through each
process's current CUDA device (Lightning sets it). A single process never gets here.
"""

from __future__ import annotations

import math
import warnings
from itertools import groupby
from numbers import Integral

import lightning as L
import torch
import torch.distributed as dist
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from lightning_matting.callbacks.step_frames import FrameRun
from lightning_matting.writers.frames import to_hwc

Batches = list[tuple[int, list[int]]]  # (dataloader_idx, dataset indices) of each batch, in the order run
Sample = tuple[int, int, str | None]  # (dataloader_idx, dataset index, video; None: the step gave no frame)
Held = tuple[str, dict[str, Tensor]]  # (video, {name: uint8 [T,C,H,W]}) of one sample

SHARE_ONLY = (
    "VideoWriterCallback: the validation videos hold rank zero's share of the frames only: the dataset "
    "indices of the other ranks' batches cannot be known (an IterableDataset, a DataLoader without a batch "
    "sampler, a sampler of its own, which Lightning wraps in a DistributedSamplerWrapper, or a batch sampler "
    "that gives other batches at each pass); the DataLoader's default sampler (Lightning then gives each rank "
    "a DistributedSampler) or a batch sampler that gives the same batches at each pass, such as "
    "VideoBatchSampler, writes every rank's frames"
)


class ValidationGather:
    """One validation epoch's gathering of frames to rank zero; made on every rank by `start`."""

    def __init__(self, plans: list[Batches], val_videos: int):
        self._rank = dist.get_rank()
        self._batches = plans[self._rank]
        self._rounds = max(map(len, plans))
        self._val_videos = val_videos
        self._positions = {}  # (dataloader_idx, batch_idx) -> position in this rank's batches
        counts = dict.fromkeys((dataloader for dataloader, _ in self._batches), 0)
        for position, (dataloader, _) in enumerate(self._batches):
            self._positions[(dataloader, counts[dataloader])] = position
            counts[dataloader] += 1
        self._seen: set[tuple[int, int]] = set()  # (dataloader_idx, index) come so far: on every rank
        self._chosen: set[str] = set()  # the videos written: on every rank
        self._waiting: dict[int, list[int]] = {}  # rank zero: per dataloader, indices not come, descending
        self._held: dict[tuple[int, int], Held] = {}  # rank zero: frames waiting for a lower index
        if self._rank == 0:
            for plan in plans:
                for dataloader, indices in plan:
                    self._waiting.setdefault(dataloader, []).extend(indices)
            self._waiting = {d: sorted(set(indices), reverse=True) for d, indices in self._waiting.items()}

    @classmethod
    def start(cls, trainer: L.Trainer, val_videos: int, val_batches: int | None) -> ValidationGather | None:
        """At a validation epoch's start, on every rank: the epoch's gathering, or None where there is none.

        Args:
            trainer: The trainer, its validation loaders set up (`on_validation_epoch_start`).
            val_videos: Videos written per validation (>= 1).
            val_batches: At most this many batches of each rank taken; None: all.

        Returns:
            None for a single process, and where some rank's indices are unknown (rank zero then warns once,
            see SHARE_ONLY): its frames are rank zero's own.
        """
        if trainer.world_size == 1:
            return None
        plan = _rank_batches(trainer, val_batches) if dist.is_initialized() else None
        plans: list[Batches | None] = [None] * trainer.world_size
        if dist.is_initialized():
            dist.all_gather_object(plans, plan)
        if any(plan is None for plan in plans):
            if trainer.is_global_zero:
                warnings.warn(SHARE_ONLY, stacklevel=2)
            return None
        return cls(plans, val_videos)

    def runs(self, runs: list[FrameRun], batch_idx: int, dataloader_idx: int) -> list[FrameRun]:
        """Share one batch's frames, on every rank: the frames rank zero can now write, in index order.

        Args:
            runs: This rank's `step_runs` of the batch, frames [N,C,H,W] (C 1, 3 or 4; float in [0,1] or
                uint8), N a multiple of the batch's samples (T frames per sample).
            batch_idx: The batch's index in its dataloader.
            dataloader_idx: Its dataloader.

        Returns:
            On rank zero, runs of one video each (named; `first_index` None), frames uint8 on the host; on the
            other ranks, and for a batch past `val_batches`, none.

        Raises:
            ValueError: The step's frames are not a whole number per sample of the batch.
        """
        position = self._positions.get((dataloader_idx, batch_idx))
        if position is None:  # past this rank's batches taken
            return []
        indices = self._batches[position][1]
        frames = (
            {name: torch.cat([run.frames[name] for run in runs]) for name in runs[0].frames} if runs else {}
        )
        videos = [  # each frame's video, named as VideoWriterCallback names one the step leaves unnamed
            run.video or f"val_{dataloader_idx}"
            for run in runs
            for _ in range(len(next(iter(run.frames.values()))))
        ]
        if len(videos) % len(indices):
            raise ValueError(
                f"VideoWriterCallback: a distributed validation orders each sample's frames by its dataset "
                f"index: the step returned {len(videos)} frames for the {len(indices)} samples of batch "
                f"{batch_idx}; return T frames per sample ([B,C,H,W] or [B,T,C,H,W])"
            )
        per_sample = len(videos) // len(indices)
        samples = [
            (dataloader_idx, index, videos[k * per_sample] if per_sample else None)
            for k, index in enumerate(indices)
        ]
        released = self._round(samples, frames, per_sample)
        if position == len(self._batches) - 1:  # this rank's last batch: the rounds of the ranks with more
            for _ in range(position + 1, self._rounds):
                released += self._round([], {}, 0)
        return _as_runs(released)

    def _round(self, samples: list[Sample], frames: dict[str, Tensor], per_sample: int) -> list[Held]:
        """One collective round: every rank's samples of one batch; the frames released on rank zero."""
        everyone: list[list[Sample]] = [[] for _ in range(dist.get_world_size())]
        dist.all_gather_object(everyone, samples)
        wanted: list[list[int]] = [[] for _ in everyone]  # per rank: positions of its samples written
        order = sorted(
            ((*sample, rank, k) for rank, batch in enumerate(everyone) for k, sample in enumerate(batch)),
            key=lambda item: (item[0], item[1], item[3]),
        )
        for dataloader, index, video, rank, k in order:
            if (dataloader, index) in self._seen:
                continue
            self._seen.add((dataloader, index))
            if video is None or (video not in self._chosen and len(self._chosen) >= self._val_videos):
                continue
            self._chosen.add(video)
            wanted[rank].append(k)
        mine = wanted[self._rank]
        rows = [k * per_sample + t for k in mine for t in range(per_sample)]
        payload = (
            [samples[k] for k in mine],
            per_sample,
            {name: _uint8(frames[name][rows]) for name in frames},
        )
        if any(wanted[1:]):
            gathered = [None] * len(everyone) if self._rank == 0 else None
            dist.gather_object(payload, gathered, dst=0)
        else:
            gathered = [payload]
        if self._rank != 0:
            return []
        for chosen, count, tensors in gathered:
            for k, (dataloader, index, video) in enumerate(chosen):
                self._held[(dataloader, index)] = (
                    video,
                    {n: t[k * count : (k + 1) * count] for n, t in tensors.items()},
                )
        return self._release()

    def _release(self) -> list[Held]:
        """Rank zero: the held frames whose lower indices have all come, in (dataloader, index) order."""
        released = []
        for dataloader, waiting in sorted(self._waiting.items()):
            while waiting and (dataloader, waiting[-1]) in self._seen:
                held = self._held.pop((dataloader, waiting.pop()), None)
                if held is not None:
                    released.append(held)
        return released


def _rank_batches(trainer: L.Trainer, val_batches: int | None) -> Batches | None:
    """This rank's batches of the epoch's validation as the loop runs them; None where they cannot be known."""
    fit = trainer.state.fn != TrainerFn.VALIDATING
    loop = trainer.fit_loop.epoch_loop.val_loop if fit else trainer.validate_loop
    # The running loop's loaders: trainer.val_dataloaders gives fit's during a later trainer.validate.
    loaders = loop._combined_loader.flattened
    batches: Batches = []
    for loader_idx, (loader, limit) in enumerate(zip(loaders, loop.max_batches, strict=True)):
        indices = _loader_batches(loader)
        if indices is None or math.isinf(limit):
            return None
        batches += [(loader_idx, batch) for batch in indices[: int(limit)]]
    return batches if val_batches is None else batches[:val_batches]


def _loader_batches(loader: object) -> list[list[int]] | None:
    """The dataset indices of each batch `loader` gives this epoch; None where they cannot be known."""
    if not isinstance(loader, DataLoader) or isinstance(loader.dataset, IterableDataset):
        return None
    if loader.batch_sampler is None or isinstance(
        getattr(loader.batch_sampler, "sampler", None), DistributedSamplerWrapper
    ):  # a wrapper's pass draws the user's sampler anew, for the loop too
        return None
    first, second = list(loader.batch_sampler), list(loader.batch_sampler)
    if first != second or not all(
        isinstance(batch, list | tuple) and batch and all(isinstance(i, Integral) for i in batch)
        for batch in first
    ):
        return None
    return [[int(i) for i in batch] for batch in first]


def _uint8(frames: Tensor) -> Tensor:
    """Frames [N,C,H,W] float in [0,1] or uint8, on any device, as uint8 [N,C,H,W] on the host (the
    writers' rounding)."""
    return to_hwc(frames.detach(), "rgb").permute(0, 3, 1, 2).cpu()


def _as_runs(released: list[Held]) -> list[FrameRun]:
    """Consecutive samples of one video joined into runs."""
    runs = []
    for video, group in groupby(released, key=lambda held: held[0]):
        samples = [frames for _, frames in group]
        runs.append(
            FrameRun(video, {name: torch.cat([s[name] for s in samples]) for name in samples[0]}, None)
        )
    return runs
