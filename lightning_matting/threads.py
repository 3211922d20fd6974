"""torch's intra-op thread count for a predict run: the cores left after decoding and encoding.

torch starts one intra-op thread per core. A predict run also decodes in DataLoader worker processes and
encodes each output on its own thread; when all of them outnumber the cores, each slows the others down
(bench/RESULTS.md has the figures). So predict gives torch the cores the others leave;
`VideoWriterCallback`, which knows the encoders, sets the count at predict start and restores it after.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader


def intra_op_threads(cores: int, workers: int, encoders: int) -> int:
    """The cores left for torch after `workers` decoding processes and `encoders` encoding threads, at least 1.

    Args:
        cores: CPU cores this process may run on (>= 1).
        workers: DataLoader worker processes (>= 0).
        encoders: Threads that encode outputs at the same time (>= 0).

    Returns:
        max(1, cores - workers - encoders).
    """
    return max(1, cores - workers - encoders)


def predict_threads(trainer: L.Trainer, requested: int | None, encoders: int) -> tuple[int, str]:
    """The intra-op thread count for `trainer`'s predict run and why, as a sentence for the log.

    Args:
        trainer: A Trainer whose predict dataloaders are set up (from `on_predict_start` on).
        requested: An explicit count (>= 1), or None to choose from the cores, workers and encoders.
        encoders: Threads that encode outputs during the run (one per written output, >= 0).

    Returns:
        (threads, reason). An OMP_NUM_THREADS in the environment is kept as torch read it.
    """
    if requested is not None:
        return requested, f"threads={requested} as set"
    if "OMP_NUM_THREADS" in os.environ:
        return torch.get_num_threads(), f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} as set"
    cores = len(os.sched_getaffinity(0))
    workers = max((loader.num_workers for loader in _loaders(trainer.predict_dataloaders)), default=0)
    threads = intra_op_threads(cores, workers, encoders)
    reason = f"{cores} cores - {workers} DataLoader workers - {encoders} encoder threads"
    return threads, reason + "; to override: MattingModule(threads=N) or OMP_NUM_THREADS"


def _loaders(iterables: Any) -> list[DataLoader]:
    """The DataLoaders among Lightning's predict iterables: one, or a sequence or mapping of them."""
    if isinstance(iterables, DataLoader):
        return [iterables]
    values = iterables.values() if isinstance(iterables, Mapping) else iterables or ()
    return [loader for loader in values if isinstance(loader, DataLoader)]


def log_threads(threads: int, reason: str) -> None:
    """Say once per run, on rank zero, how many intra-op threads torch runs with and why."""
    rank_zero_info(f"MattingModule: torch runs {threads} intra-op thread{'s' * (threads != 1)} ({reason})")
