"""Video metadata at the bottom of the tree: `VideoInfo` and the one exact frame-rate converter.

Imports neither Lightning nor torch, so readers (`data/`), writers (`writers/`) and the callback share it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from lightning_matting.validators import invalid

# A float within this relative distance of an NTSC rate n*1000/1001 is that rate (29.97 -> 30000/1001).
_NTSC_TOLERANCE = 1e-4


@dataclass(frozen=True)
class VideoInfo:
    """A video as read or as it will be written.

    Args:
        name: The video's name: the folder of its outputs (`<output_dir>/<name>/`).
        fps: Exact frame rate in frames per second (30000/1001, not 29.97).
        width: Frame width in pixels.
        height: Frame height in pixels.
        num_frames: Number of frames.
        source: The video file it comes from (its audio can be copied), if any.
        frame_times: A variable-rate video's presentation time of each frame, in seconds from its first
            frame (exact, from the container's timestamps; `num_frames` of them, increasing); None: constant
            rate, frame i at i / fps.
    """

    name: str
    fps: Fraction
    width: int
    height: int
    num_frames: int
    source: str | None = None
    frame_times: tuple[Fraction, ...] | None = None

    @property
    def variable_rate(self) -> bool:
        """Whether frames are shown at their own `frame_times` rather than every 1 / fps."""
        return self.frame_times is not None

    def largest_drift(self) -> Fraction:
        """The largest gap in seconds between a frame's time and where a constant-rate copy shows it (i / fps)."""
        if self.frame_times is None:
            return Fraction(0)
        return max(abs(time - index / self.fps) for index, time in enumerate(self.frame_times))


def frame_time(index: int, fps: Fraction, frame_times: Sequence[Fraction] | None) -> Fraction:
    """Presentation time in seconds of frame `index` from the first frame: `frame_times[index]`, or index / fps
    at a constant rate. Past the last of `frame_times` (the video's end at index len(frame_times)) the last
    frame's duration repeats; before frame 0, 1 / fps does."""
    if frame_times is None or index < 0:
        return index / Fraction(fps)
    if index < len(frame_times):
        return frame_times[index]
    last = frame_times[-1] - frame_times[-2] if len(frame_times) > 1 else 1 / Fraction(fps)
    return frame_times[-1] + (index - len(frame_times) + 1) * last


def to_fraction(fps: float | int | str | Fraction, argument: str = "fps") -> Fraction:
    """An exact frame rate from a number or a string.

    Args:
        fps: Frames per second: an int, a Fraction (kept exactly), a string "30000/1001" (exact) or
            "29.97", or a float. A float (or decimal string) within 0.01% of an NTSC rate n*1000/1001 is
            that rate (29.97 and 29.97002997 -> 30000/1001, 23.976 -> 24000/1001); any other float is the
            fraction with the smallest denominator (<= 1001, else <= 10**6) that equals it as a float.
        argument: The argument's name in the error message.

    Returns:
        The frame rate as a positive Fraction.

    Raises:
        TypeError: `fps` is neither a number nor a string (a bool included), naming `argument`.
        ValueError: `fps` is not a finite positive number or fraction, naming `argument`.
    """
    expected = "a number > 0 or a fraction like '30000/1001' (frames/s)"
    bad_value = ValueError(invalid(argument, fps, expected))
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real | str):
        raise TypeError(invalid(argument, fps, expected))
    if isinstance(fps, str):
        text = fps.strip()
        try:
            exact = Fraction(text)
        except ValueError:
            raise bad_value from None
        if "." in text or "e" in text.lower():  # a decimal, as typed: read like a float
            fps = float(exact)
    if isinstance(fps, numbers.Rational):
        exact = Fraction(int(fps.numerator), int(fps.denominator))
    elif isinstance(fps, numbers.Real) and math.isfinite(fps) and fps > 0:
        exact = _float_rate(float(fps))
    elif not isinstance(fps, str):
        raise bad_value
    if exact <= 0:
        raise bad_value
    return exact


def _float_rate(fps: float) -> Fraction:
    ntsc = Fraction(round(fps * 1.001) * 1000, 1001)  # 23.976, 29.97, 59.94, ...
    if ntsc > 0 and abs(fps - ntsc) < _NTSC_TOLERANCE * fps:
        return ntsc
    exact = Fraction(fps)
    for max_denominator in (1001, 1_000_000):
        candidate = exact.limit_denominator(max_denominator)
        if float(candidate) == fps:
            return candidate
    return exact
