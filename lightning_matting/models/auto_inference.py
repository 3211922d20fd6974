"""inference="auto": at the first batch, time the inference paths this CPU runs and keep the fastest exact one.

"Exact enough" means pha within `AUTO_TOLERANCE` (max abs error) of the float32 path on that batch. The paths
are the float32 inference copy ("fast", always kept when nothing beats it), the copy in bf16 (CPUs with bf16
instructions) and OpenVINO in float32, bf16 (the same CPUs) and int8 (the `[openvino]` extra installed).
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Mapping, Set
from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from lightning_matting.cpu import cpu_info, has_native_bf16
from lightning_matting.models.inference import inference_copy
from lightning_matting.models.openvino_runtime import OpenVinoBGMv2, OpenVinoRVM
from lightning_matting.models.precision import bf16_copy
from lightning_matting.models.rvm import RobustVideoMatting

Candidate = Literal["fast", "bf16", "openvino", "openvino-bf16", "openvino-int8"]
AUTO_TOLERANCE = 2e-3  # max abs pha error against float32: half an 8-bit level
# How each candidate is asked for by hand, as the log names it.
SETTINGS: dict[Candidate, str] = {
    "fast": "inference='fast'",
    "bf16": "precision='bf16'",
    "openvino": "inference='openvino'",
    "openvino-bf16": "inference='openvino-bf16'",
    "openvino-int8": "inference='openvino-int8'",
}


def auto_candidates(flags: Set[str] | tuple[str, ...], installed: Set[str]) -> tuple[Candidate, ...]:
    """The paths inference="auto" times on a CPU with `flags` when the modules `installed` are importable.

    Args:
        flags: CPU flags as /proc/cpuinfo names them (`cpu_info().flags`).
        installed: Importable module names among "openvino" and "nncf".

    Returns:
        "fast" first; "bf16" with native bf16 (`has_native_bf16`); "openvino" with openvino, "openvino-bf16"
        with both, "openvino-int8" with openvino and nncf.
    """
    bf16 = has_native_bf16(flags)
    candidates: list[Candidate] = ["fast"] + (["bf16"] if bf16 else [])
    if "openvino" in installed:
        candidates += ["openvino"] + (["openvino-bf16"] if bf16 else [])
        candidates += ["openvino-int8"] if "nncf" in installed else []
    return tuple(candidates)


def choose_candidate(
    seconds: Mapping[Candidate, float], errors: Mapping[Candidate, float], tolerance: float = AUTO_TOLERANCE
) -> Candidate:
    """The fastest candidate whose pha error stays below `tolerance`; "fast" when none beats it.

    Args:
        seconds: Each timed candidate's time on the batch (s); must hold "fast".
        errors: Each candidate's max abs pha error against "fast" on the batch.
        tolerance: The largest error kept (exclusive).

    Returns:
        A key of `seconds`.
    """
    exact = [name for name in seconds if name == "fast" or errors[name] < tolerance]
    return min(exact, key=lambda name: seconds[name])


def installed_runtimes() -> frozenset[str]:
    """The modules among "openvino" and "nncf" that can be imported here."""
    return frozenset(name for name in ("openvino", "nncf") if importlib.util.find_spec(name) is not None)


class AutoInference(nn.Module):
    """Our network's fastest exact-enough inference path, chosen at its first call; called like the network.

    The first call runs each candidate on its inputs twice (the first builds: OpenVINO converts, int8
    calibrates), times the second, logs one line per candidate and the choice, and returns the chosen one's
    outputs; later calls run the chosen one only. A network off the CPU, or inputs other than float32, run
    "fast". RVM's segmentation pass always runs "fast" (the OpenVINO paths run the matting pass only).

    Args:
        net: One of our MattingBase, MattingRefine or RobustVideoMatting networks (copied by each path).
        candidates: What to time, "fast" first (`auto_candidates`); None: those of this CPU and the installed
            modules.
    """

    def __init__(self, net: nn.Module, candidates: tuple[Candidate, ...] | None = None) -> None:
        super().__init__()
        self.recurrent = isinstance(net, RobustVideoMatting)
        on_cpu = next(net.parameters()).device.type == "cpu"
        self.candidates = (
            (candidates or auto_candidates(cpu_info().flags, installed_runtimes())) if on_cpu else ("fast",)
        )
        self.fast = inference_copy(net)
        self._paths: dict[Candidate, Callable[..., Any]] = {
            name: self.fast if name == "fast" else _path(name, net) for name in self.candidates
        }
        self.chosen: Candidate | None = None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The network's outputs for its arguments, through the chosen path (chosen at the first call)."""
        if self.recurrent and (kwargs.get("segmentation_pass") or (len(args) > 6 and args[6])):
            return self.fast(*args, **kwargs)
        if self.chosen is None:
            return self._choose(*args, **kwargs)
        return self._paths[self.chosen](*args, **kwargs)

    def _choose(self, *args: Any, **kwargs: Any) -> Any:
        src: Tensor = args[0]
        if src.device.type != "cpu" or src.dtype != torch.float32:
            self.chosen = "fast"
            return self.fast(*args, **kwargs)
        pha_index = 1 if self.recurrent else 0
        seconds: dict[Candidate, float] = {}
        errors: dict[Candidate, float] = {}
        outputs: dict[Candidate, Any] = {}
        for name, path in self._paths.items():
            path(*args, **kwargs)  # builds (converts, calibrates) and warms up
            start = time.perf_counter()
            outputs[name] = path(*args, **kwargs)
            seconds[name] = time.perf_counter() - start
            pha, exact = outputs[name][pha_index], outputs["fast"][pha_index]
            errors[name] = (pha.float() - exact.float()).abs().max().item()
            kept = "kept" if name == "fast" or errors[name] < AUTO_TOLERANCE else "too far"
            rank_zero_info(
                f"MattingModule: inference='auto' timed {SETTINGS[name]}: {seconds[name] * 1000:.0f} ms for "
                f"{_frames(src, self.recurrent)} frame(s), pha error {errors[name]:.1e} against float32 ({kept}; "
                f"limit {AUTO_TOLERANCE:.0e})"
            )
        self.chosen = choose_candidate(seconds, errors)
        self._paths = {self.chosen: self._paths[self.chosen]}  # the others' memory freed
        rank_zero_info(f"MattingModule: inference='auto' runs {SETTINGS[self.chosen]} (the fastest kept)")
        return outputs[self.chosen]


def _path(name: Candidate, net: nn.Module) -> nn.Module:
    """The network of a candidate other than "fast", made from `net`."""
    if name == "bf16":
        return bf16_copy(net)
    precision = {"openvino": "f32", "openvino-bf16": "bf16", "openvino-int8": "int8"}[name]
    return (
        OpenVinoRVM(net, precision) if isinstance(net, RobustVideoMatting) else OpenVinoBGMv2(net, precision)
    )


def _frames(src: Tensor, recurrent: bool) -> int:
    """The frames in a call's src: [B,3,H,W], or RVM's [N,T,3,H,W]."""
    return src.shape[0] * src.shape[1] if recurrent and src.dim() == 5 else src.shape[0]
