"""The full-scale value of integer samples: the integer that 1.0 is (8-bit 255, 10-bit 1023, 16-bit 65535).

Frames travel as uint8 (8-bit sources and outputs) or uint16 (deeper ones, 10 and 12 bits scaled to 16); floats
in [0, 1] are those values divided by their type's full scale.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import torch


def full_scale(bits: int) -> int:
    """The largest value of `bits`-bit samples, what 1.0 is: 2**bits - 1 (8 -> 255, 10 -> 1023, 16 -> 65535)."""
    return 2**bits - 1


# The full scale of each integer sample dtype frames travel in.
FULL_SCALE: Mapping[torch.dtype, int] = MappingProxyType(
    {torch.uint8: full_scale(8), torch.uint16: full_scale(16)}
)
