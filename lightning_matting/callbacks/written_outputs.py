"""The outputs a writer callback writes, and how it takes them from a step's frames."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from lightning_matting.callbacks.step_frames import Select
from lightning_matting.outputs import rgba_com_sources, with_rgba_com


@dataclass(frozen=True)
class WrittenOutputs:
    """The names written and the frames a step gives for them.

    Attributes:
        names: The outputs written, in order (checked by `check_writable_names`).
        rgba_com: com is written as straight-alpha RGBA, built from the step's pha and fgr.
        select: `select(outputs, batch) -> {name: Tensor}` for step outputs of another structure; None.
    """

    names: tuple[str, ...]
    rgba_com: bool
    select: Select | None

    @property
    def taken(self) -> tuple[str, ...]:
        """The names taken from the step: an RGBA com's pha and fgr instead of com."""
        return rgba_com_sources(self.names) if self.rgba_com else self.names

    def complete(self, frames: dict[str, Tensor]) -> dict[str, Tensor]:
        """The step's frames (`taken`) with the RGBA com built, when it is."""
        return with_rgba_com(frames) if self.rgba_com and "com" in self.names else frames
