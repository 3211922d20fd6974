"""torch's intra-op thread count for a predict run: the cores other processes leave.

torch starts one intra-op thread per core. An intra-op thread that loses its core stalls every other one at
the next barrier, so on a machine that other processes keep busy torch must run fewer threads; on an idle one
it gains from every core, even beside its own DataLoader workers and encoder threads (bench/RESULTS.md has
the figures). So on Linux predict watches the load over a short window at predict start (/proc/stat, this
process and its workers left out) and gives torch the cores the other processes leave. Where the load cannot
be read (no /proc/stat), torch gets the cores left after the workers and encoders. `VideoWriterCallback`,
which knows the encoders, sets the count at predict start and restores it after.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Mapping, Set
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader

PROC_STAT = Path("/proc/stat")
LOAD_WINDOW_S = 0.2  # how long predict start watches the other processes' load
# A core counts as taken by other processes once they keep more than this share of it busy.
TAKEN_CORE_SHARE = 0.25


def intra_op_threads(cores: int, busy: float | None, workers: int, encoders: int) -> int:
    """torch's intra-op threads: the cores other processes leave, or without a measured load the cores left
    after the workers and encoders; at least 1.

    Args:
        cores: CPU cores this process may run on (>= 1).
        busy: Cores' worth of CPU time other processes used at normal priority (`busy_cores`), or None
            where it could not be measured.
        workers: DataLoader worker processes (>= 0).
        encoders: Threads that encode outputs at the same time (>= 0).

    Returns:
        With `busy`: max(1, cores - ceil(busy - TAKEN_CORE_SHARE)); without: max(1, cores - workers -
        encoders).
    """
    if busy is None:
        return max(1, cores - workers - encoders)
    return max(1, cores - max(0, math.ceil(busy - TAKEN_CORE_SHARE)))


def busy_cores(cpus: Set[int], seconds: float = LOAD_WINDOW_S) -> float | None:
    """Cores' worth of CPU time that other processes used at normal priority on `cpus` over `seconds`.

    Reads /proc/stat's user, system, irq, softirq and steal times (niced work, which yields, is left out)
    before and after the window and takes off the CPU time of this process and its child processes (the
    DataLoader workers, which may be decoding already).

    Args:
        cpus: The CPU numbers to watch (`os.sched_getaffinity(0)`).
        seconds: The window (s).

    Returns:
        0 to len(cpus); None where /proc/stat is unreadable or lists none of `cpus`.
    """
    before, own_before, start = _cpu_times(cpus), _own_ticks(), time.perf_counter()
    time.sleep(seconds)
    after, own_after, elapsed = _cpu_times(cpus), _own_ticks(), time.perf_counter() - start
    if before is None or after is None:
        return None
    others = (after - before - (own_after - own_before)) / os.sysconf("SC_CLK_TCK")
    return min(float(len(cpus)), max(0.0, others / elapsed))


def _cpu_times(cpus: Set[int]) -> int | None:
    """The busy clock ticks (user, system, irq, softirq, steal) of `cpus` in /proc/stat, or None."""
    try:
        lines = PROC_STAT.read_text().splitlines()
    except OSError:
        return None
    total, found = 0, False
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            user, _nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
            total, found = total + user + system + irq + softirq + steal, True
    return total if found else None


def _own_ticks() -> int:
    """The user and system clock ticks of this process (every thread) and its child processes so far."""
    pids = [str(os.getpid())]
    for children in Path("/proc/self/task").glob("*/children"):
        try:
            pids += children.read_text().split()
        except OSError:
            continue  # a thread that ended
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue  # a worker that ended
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total


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
    cpus = os.sched_getaffinity(0)
    workers = max((loader.num_workers for loader in _loaders(trainer.predict_dataloaders)), default=0)
    busy = busy_cores(cpus) if sys.platform.startswith("linux") else None
    threads = intra_op_threads(len(cpus), busy, workers, encoders)
    if busy is None:
        reason = f"{len(cpus)} cores - {workers} DataLoader workers - {encoders} encoder threads"
    else:
        reason = f"{len(cpus)} cores, {busy:.1f} of them busy with other processes"
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
