"""How a writer callback stops a run on a signal: the run fails with a message saying what is kept."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

RESUME_HINT = "rerun the same command with --resume=true (resume=True) to continue"


def stop_on_sigterm(trainer: L.Trainer, stage: str, how: str) -> None:
    """After a batch, stop a run that received SIGTERM (preemption, `kill`, `docker stop`): Lightning's
    predict loop never looks, and its evaluation loop exits with status 0. Every file is finalized in
    `on_exception`; the exit status is 1 and the message says how to continue."""
    if trainer.received_sigterm:
        raise SIGTERMException(stopped(stage, "SIGTERM", how))


def stopped(stage: str, by: str, how: str) -> str:
    """The message of a run stopped by a signal: what is kept, and `how` to continue."""
    return (
        f"VideoWriterCallback: {stage} stopped by {by}; every output written so far is finalized and playable: "
        f"{how}"
    )
