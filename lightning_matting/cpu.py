"""What this machine's CPU is and which of its instructions matter for inference speed (bf16, int8, AVX).

Read from /proc/cpuinfo on Linux; elsewhere the model is "unknown CPU" and the flags are empty, so bf16 is
taken as unavailable there."""

from __future__ import annotations

import functools
from collections.abc import Set
from dataclasses import dataclass
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# The flags that decide which kernels oneDNN can use: vector width, bf16 and int8 dot products, AMX tiles.
RELEVANT_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile")
# Either gives bf16 dot products in hardware; without them oneDNN emulates bf16 with fp32 instructions.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class CpuInfo:
    """A CPU's model name and which of `RELEVANT_FLAGS` it has.

    Attributes:
        model: The model name as /proc/cpuinfo gives it, or "unknown CPU".
        flags: The `RELEVANT_FLAGS` it has, in that order.
    """

    model: str
    flags: tuple[str, ...]

    def describe(self) -> str:
        """The model and its flags, e.g. "Intel(R) Xeon(R) Processor (avx2, avx512f, amx_bf16)"."""
        return f"{self.model} ({', '.join(self.flags) if self.flags else 'none of ' + ', '.join(RELEVANT_FLAGS)})"


def parse_cpuinfo(text: str) -> CpuInfo:
    """The first processor's model name and relevant flags in the text of /proc/cpuinfo.

    Args:
        text: /proc/cpuinfo's content (x86 "model name" and "flags" lines; others give no flags).

    Returns:
        CpuInfo; "unknown CPU" and no flags where the lines are missing.
    """
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    present = set(fields.get("flags", "").split())
    return CpuInfo(
        fields.get("model name") or "unknown CPU", tuple(f for f in RELEVANT_FLAGS if f in present)
    )


@functools.cache
def cpu_info() -> CpuInfo:
    """This machine's CpuInfo (read once); "unknown CPU" without flags where /proc/cpuinfo is unreadable."""
    try:
        return parse_cpuinfo(CPUINFO.read_text())
    except OSError:
        return CpuInfo("unknown CPU", ())


def has_native_bf16(flags: Set[str] | tuple[str, ...]) -> bool:
    """Whether a CPU with these flags runs bf16 convolutions and matrix products in hardware.

    Args:
        flags: CPU flags as /proc/cpuinfo names them (e.g. `cpu_info().flags`).

    Returns:
        True when any of `NATIVE_BF16_FLAGS` is among them.
    """
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)
