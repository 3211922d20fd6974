"""torch's intra-op thread count for a predict run, and the lower OS priority of decoding and encoding.

torch starts one intra-op thread per core. A predict run also decodes in DataLoader worker processes and
encodes each output on its own thread. An intra-op thread that loses its core stalls every other one at the
next barrier, so torch must not share cores at equal priority: on Linux the workers and encoder threads run
niced (`lower_priority`), so they take what torch leaves, and torch gets the cores that other processes do
not keep busy, measured over a short window at predict start (bench/RESULTS.md has the figures). Where the
load or the niceness cannot be read or set (no /proc/stat), torch gets the cores the workers and encoders
leave. `VideoWriterCallback`, which knows the encoders, sets the count at predict start and restores it
after.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections.abc import Mapping, Set
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader

PROC_STAT = Path("/proc/stat")
BACKGROUND_NICENESS = 10  # decoding and encoding get about a tenth of a core's share against torch's threads
LOAD_WINDOW_S = 0.2  # how long predict start watches the other processes' load
# A core counts as taken by other processes once they keep more than this share of it busy.
TAKEN_CORE_SHARE = 0.25


def intra_op_threads(cores: int, busy: float | None, workers: int, encoders: int) -> int:
    """torch's intra-op threads: the cores other processes leave, or without a measured load (and niceness)
    the cores left after the workers and encoders; at least 1.

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

    Reads /proc/stat's user, system, irq, softirq and steal times (niced work, ours included, is left out)
    before and after the window and takes this process's own CPU time off.

    Args:
        cpus: The CPU numbers to watch (`os.sched_getaffinity(0)`).
        seconds: The window (s).

    Returns:
        0 to len(cpus); None where /proc/stat is unreadable or lists none of `cpus`.
    """
    before, own_before, start = _cpu_times(cpus), _own_cpu_seconds(), time.perf_counter()
    time.sleep(seconds)
    after, own_after, elapsed = _cpu_times(cpus), _own_cpu_seconds(), time.perf_counter() - start
    if before is None or after is None:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    others = (after - before) / ticks - (own_after - own_before)
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


def _own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def lower_priority(*_: Any) -> None:
    """Lower the calling thread's OS priority by BACKGROUND_NICENESS (Linux, where niceness is per thread;
    threads it starts later inherit it); elsewhere nothing. Takes and ignores a DataLoader worker id, so it
    serves as a `worker_init_fn`."""
    if not sys.platform.startswith("linux"):
        return
    thread = threading.get_native_id()
    try:
        os.setpriority(
            os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + BACKGROUND_NICENESS)
        )
    except OSError:
        pass  # a sandbox that forbids it: the thread keeps its priority


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
        reason = (
            f"{len(cpus)} cores, {busy:.1f} of them busy with other processes; the {workers} DataLoader workers "
            f"and {encoders} encoder threads run at a lower OS priority"
        )
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
