"""Batches of consecutive frames of one video at a time, for writers and recurrent models."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

from torch.utils.data import Sampler, default_collate

SHARED_KEYS = ("bgr", "tgt")  # per-frame keys that are often one image for the whole video


class VideoBatchSampler(Sampler[list[int]]):
    """Lists of dataset indices: consecutive frames of one video, in order, never two videos in one batch.

    The dataset holds videos of `lengths` frames end to end (like `MultiVideoDataset`); each video is cut
    into batches of `batch_size` frames, its last batch possibly shorter. Nothing is shuffled or dropped.
    `starts` (one per video, default 0) skips each video's first frames: a resumed run begins at `starts[i]`.

    Example::

        sampler = VideoBatchSampler([v.num_frames for v in dataset.videos], batch_size=4)
        loader = DataLoader(dataset, batch_sampler=sampler)
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, starts: Sequence[int] | None = None) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in lengths):
            raise ValueError(
                f"lengths must be non-negative integers (frames per video), got {list(lengths)!r}"
            )
        starts = [0] * len(lengths) if starts is None else list(starts)
        if len(starts) != len(lengths) or any(
            isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= n
            for s, n in zip(starts, lengths, strict=True)
        ):
            raise ValueError(
                f"starts must give one int in [0, frames] per video (lengths {list(lengths)!r}), got {starts!r}"
            )
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.starts = starts

    def __iter__(self) -> Iterator[list[int]]:
        offset = 0
        for length, start in zip(self.lengths, self.starts, strict=True):
            for first in range(start, length, self.batch_size):
                yield list(range(offset + first, offset + min(first + self.batch_size, length)))
            offset += length

    def __len__(self) -> int:
        return sum(
            math.ceil((length - start) / self.batch_size)
            for length, start in zip(self.lengths, self.starts, strict=True)
        )


def collate_frames(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Collate dataset items; a plate or target that is one tensor for every item is sent once.

    Such a key becomes [1,C,H,W] instead of [B,C,H,W] and is listed under "static", so that a static
    background plate crosses to the device once per batch (and MattingModule keeps it once per video).
    """
    shared = [
        key for key in SHARED_KEYS if key in items[0] and all(item[key] is items[0][key] for item in items)
    ]
    batch = default_collate([{k: v for k, v in item.items() if k not in shared} for item in items])
    for key in shared:
        batch[key] = items[0][key].unsqueeze(0)
    if shared:
        batch["static"] = shared
    return batch
