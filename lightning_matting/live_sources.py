"""Which sources are live (network streams, standard input, V4L2 cameras), and the ones refused before opening.

Imports neither torch nor PyAV, so that the command line tells a live input from a path at once.
"""

from __future__ import annotations

import re
from pathlib import Path

LIVE_SCHEMES = ("udp", "tcp", "rtsp", "rtmp", "srt", "http", "https")
STDIN = "-"
DEVICE = re.compile(r"/dev/video\d+")


def is_live_source(source: str) -> bool:
    """Whether `source` names a live input: a URL (`scheme://...`), '-' (standard input) or `/dev/videoN`."""
    return source == STDIN or "://" in source or DEVICE.fullmatch(source) is not None


def check_live_source(source: str) -> None:
    """Refuse a live source that cannot be opened whatever the network does: an unknown scheme, a missing device.

    Raises:
        ValueError: A URL whose scheme is none of `LIVE_SCHEMES`, naming it.
        FileNotFoundError: A `/dev/videoN` that does not exist, naming it.
    """
    if "://" in source:
        scheme = source.split("://", 1)[0].lower()
        if scheme not in LIVE_SCHEMES:
            raise ValueError(
                f"source {source!r} is a URL of the unknown scheme {scheme!r}: a live source is a URL of "
                f"{', '.join(f'{s}://' for s in LIVE_SCHEMES)}, '-' (standard input) or /dev/videoN (a V4L2 "
                "camera); a file is given by its path"
            )
    elif DEVICE.fullmatch(source) and not Path(source).exists():
        raise FileNotFoundError(
            f"source {source!r}: no such video device; the cameras here are "
            f"{sorted(str(p) for p in Path('/dev').glob('video*')) or 'none'} (V4L2, /dev/videoN)"
        )
