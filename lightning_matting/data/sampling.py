"""Batches of consecutive frames of one video at a time, for writers and recurrent models."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

from torch.utils.data import Sampler


class VideoBatchSampler(Sampler[list[int]]):
    """Lists of dataset indices: consecutive frames of one video, in order, never two videos in one batch.

    The dataset holds videos of `lengths` frames end to end (like `MultiVideoDataset`); each video is cut
    into batches of `batch_size` frames, its last batch possibly shorter. Nothing is shuffled or dropped.

    Example::

        sampler = VideoBatchSampler([v.num_frames for v in dataset.videos], batch_size=4)
        loader = DataLoader(dataset, batch_sampler=sampler)
    """

    def __init__(self, lengths: Sequence[int], batch_size: int) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in lengths):
            raise ValueError(
                f"lengths must be non-negative integers (frames per video), got {list(lengths)!r}"
            )
        self.lengths = list(lengths)
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[list[int]]:
        start = 0
        for length in self.lengths:
            for first in range(0, length, self.batch_size):
                yield list(range(start + first, start + min(first + self.batch_size, length)))
            start += length

    def __len__(self) -> int:
        return sum(math.ceil(length / self.batch_size) for length in self.lengths)
