"""FrameRanges: set algebra on frame indices, checked against Python sets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lightning_matting.run.frame_ranges import FrameRanges

spans = st.lists(st.tuples(st.integers(0, 60), st.integers(0, 12)).map(lambda s: range(s[0], s[0] + s[1])))


def frames_of(ranges: FrameRanges) -> set[int]:
    return {index for frames in ranges for index in frames}


def flat(spans_: list[range]) -> set[int]:
    return {index for frames in spans_ for index in frames}


@given(spans)
def test_ranges_are_sorted_disjoint_and_apart(spans_):
    ranges = list(FrameRanges(spans_))
    assert all(len(r) and r.step == 1 for r in ranges)
    assert all(a.stop < b.start for a, b in zip(ranges, ranges[1:], strict=False))  # touching ones are merged
    assert frames_of(FrameRanges(spans_)) == flat(spans_)
    assert FrameRanges(spans_).frame_count == len(flat(spans_))
    assert FrameRanges.of_indices(sorted(flat(spans_), reverse=True)) == FrameRanges(spans_)


@given(spans, spans, st.integers(0, 80))
def test_union_intersect_missing_contains_match_sets(a, b, num_frames):
    x, y = FrameRanges(a), FrameRanges(b)
    assert frames_of(x.union(y)) == flat(a) | flat(b)
    assert frames_of(x.intersect(y)) == flat(a) & flat(b)
    assert frames_of(x.intersect(b)) == flat(a) & flat(b)
    assert frames_of(x.missing(num_frames)) == set(range(num_frames)) - flat(a)
    for frames in b:
        assert x.contains(frames) == (set(frames) <= flat(a))


def test_value_semantics_and_bad_ranges():
    ranges = FrameRanges([range(10, 20), range(0, 10), range(4, 4)])
    assert ranges == FrameRanges([range(0, 20)]) and hash(ranges) == hash(FrameRanges([range(20)]))
    assert list(ranges) == [range(0, 20)] and len(ranges) == 1 and ranges and not FrameRanges()
    assert repr(ranges) == "FrameRanges([range(0, 20)])"
    assert ranges != [range(0, 20)]
    for bad in (range(0, 10, 2), range(-1, 3)):
        with pytest.raises(
            ValueError, match=r"frame ranges must be ranges of frames >= 0 with step 1, got range"
        ):
            FrameRanges([bad])


def test_shares_are_consecutive_near_equal_and_cover_every_frame_once():
    frames = FrameRanges([range(0, 2), range(6, 10)])
    assert frames.shares(2) == [FrameRanges([range(0, 2), range(6, 7)]), FrameRanges([range(7, 10)])]
    shares = FrameRanges([range(3, 8), range(20, 23)]).shares(3)
    assert [share.frame_count for share in shares] == [2, 3, 3]
    assert FrameRanges(r for share in shares for r in share) == FrameRanges([range(3, 8), range(20, 23)])
    assert FrameRanges([range(0, 2)]).shares(3) == [
        FrameRanges(),
        FrameRanges([range(0, 1)]),
        FrameRanges([range(1, 2)]),
    ]
    with pytest.raises(ValueError, match=r"^invalid count \(0\): expected an int >= 1$"):
        FrameRanges().shares(0)
