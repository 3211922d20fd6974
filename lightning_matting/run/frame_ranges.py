"""FrameRanges: a set of frame indices held as sorted disjoint half-open ranges."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from lightning_matting.validators import check_int


class FrameRanges:
    """An immutable set of frame indices (ints >= 0) as the fewest sorted disjoint `range`s (step 1).

    Touching or overlapping ranges merge and empty ones vanish, so equal sets compare equal. Iterating gives
    the ranges in order.

    Example::

        done = FrameRanges([range(0, 10), range(10, 20), range(30, 40)])  # [range(0, 20), range(30, 40)]
        done.missing(50)  # [range(20, 30), range(40, 50)]

    Args:
        ranges: Ranges of frames, in any order, overlapping or not.

    Raises:
        ValueError: A range with a step other than 1 or a negative start.
    """

    __slots__ = ("_ranges",)

    def __init__(self, ranges: Iterable[range] = ()):
        merged: list[range] = []
        for frames in sorted((r for r in ranges if _checked(r)), key=lambda r: r.start):
            if merged and frames.start <= merged[-1].stop:
                merged[-1] = range(merged[-1].start, max(merged[-1].stop, frames.stop))
            else:
                merged.append(frames)
        self._ranges = tuple(merged)

    @classmethod
    def of_indices(cls, indices: Iterable[int]) -> FrameRanges:
        """The frames `indices` (any order, repeats allowed)."""
        return cls(range(index, index + 1) for index in indices)

    def __iter__(self) -> Iterator[range]:
        return iter(self._ranges)

    def __len__(self) -> int:
        """The number of ranges (see `frame_count` for the number of frames)."""
        return len(self._ranges)

    def __bool__(self) -> bool:
        return bool(self._ranges)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FrameRanges) and self._ranges == other._ranges

    def __hash__(self) -> int:
        return hash(self._ranges)

    def __repr__(self) -> str:
        return f"FrameRanges([{', '.join(f'range({r.start}, {r.stop})' for r in self._ranges)}])"

    @property
    def frame_count(self) -> int:
        """The number of frames held."""
        return sum(len(frames) for frames in self._ranges)

    def union(self, other: Iterable[range]) -> FrameRanges:
        """The frames in either."""
        return FrameRanges((*self._ranges, *other))

    def intersect(self, other: Iterable[range]) -> FrameRanges:
        """The frames in both."""
        other = other if isinstance(other, FrameRanges) else FrameRanges(other)
        both, j = [], 0
        for x in self._ranges:
            while j < len(other._ranges) and other._ranges[j].stop <= x.start:
                j += 1
            k = j
            while k < len(other._ranges) and other._ranges[k].start < x.stop:
                y = other._ranges[k]
                both.append(range(max(x.start, y.start), min(x.stop, y.stop)))
                k += 1
        return FrameRanges(both)

    def missing(self, num_frames: int) -> FrameRanges:
        """The frames of [0, num_frames) not held (the complement within a video of `num_frames` frames)."""
        gaps, position = [], 0
        for frames in self._ranges:
            gaps.append(range(position, min(frames.start, num_frames)))
            position = frames.stop
        gaps.append(range(position, num_frames))
        return FrameRanges(gaps)

    def shares(self, count: int) -> list[FrameRanges]:
        """The frames cut, in order, into `count` consecutive shares of near-equal size.

        Args:
            count: The number of shares (>= 1), such as a distributed run's ranks.

        Returns:
            `count` FrameRanges; share k holds the held frames at positions [n * k // count, n * (k + 1) //
            count) of the n in order, so sizes differ by at most 1 and every frame is in exactly one share.

        Raises:
            TypeError: `count` not an int.
            ValueError: `count` < 1.
        """
        check_int("count", count, minimum=1)
        cuts = [self.frame_count * k // count for k in range(count + 1)]
        shares: list[list[range]] = [[] for _ in range(count)]
        position = 0  # held frames before `frames`
        for frames in self._ranges:
            for k in range(count):
                start = max(cuts[k], position) - position
                stop = min(cuts[k + 1], position + len(frames)) - position
                if start < stop:
                    shares[k].append(frames[start:stop])
            position += len(frames)
        return [FrameRanges(share) for share in shares]

    def contains(self, frames: range) -> bool:
        """Whether every frame of `frames` is held (an empty range always is)."""
        return not frames or any(r.start <= frames.start and frames.stop <= r.stop for r in self._ranges)


def _checked(frames: range) -> bool:
    """Whether `frames` holds any frame; a ValueError for a step other than 1 or a negative start."""
    if not isinstance(frames, range) or frames.step != 1 or (frames and frames.start < 0):
        raise ValueError(f"frame ranges must be ranges of frames >= 0 with step 1, got {frames!r}")
    return len(frames) > 0
