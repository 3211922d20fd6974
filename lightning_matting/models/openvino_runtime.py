"""RobustVideoMatting run by OpenVINO on the CPU (the `[openvino]` extra).

The matting step (models/onnx_export.py's `rvm_step`: BatchNorm folded, the state as inputs and outputs) is
converted from the torch module with `openvino.convert_model` at the shapes of the first batch and compiled
for the CPU in float32 or bfloat16. Only the matting pass runs (not the segmentation pass).
"""

from __future__ import annotations

import importlib
import time
from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from lightning_matting.models.exported_rvm import ExportedRVM, Step
from lightning_matting.models.onnx_export import quiet_exporter, rvm_step
from lightning_matting.models.rvm import RobustVideoMatting

Precision = Literal["f32", "bf16"]
PRECISIONS: tuple[Precision, ...] = ("f32", "bf16")
INSTALL_HINT = "pip install 'lightning-matting[openvino]'"


def require_openvino() -> Any:
    """The openvino module.

    Raises:
        ImportError: openvino is not installed.
    """
    try:
        return importlib.import_module("openvino")
    except ImportError as error:
        raise ImportError(f"OpenVINO inference needs openvino ({INSTALL_HINT}): {error}") from error


class OpenVinoRVM(ExportedRVM):
    """A RobustVideoMatting run by OpenVINO on the CPU, called like the network (`ExportedRVM`).

    Each batch size, frame size and ratio is converted at its first call, and compiled per thread count:
    performance hint LATENCY, `INFERENCE_NUM_THREADS` torch's current intra-op thread count
    (`torch.get_num_threads()`), threads not pinned to cores, so that decoders and encoders share them.
    Inputs, outputs and states stay float32 in either precision.

    Args:
        net: One of our RobustVideoMatting networks on the CPU; copied, so later changes to it are not seen.
        precision: OpenVINO's inference precision: "f32", or "bf16" (on CPUs with AVX512_BF16 or AMX).

    Raises:
        TypeError: `net` is not a RobustVideoMatting.
        ValueError: `net` is not on the CPU, or `precision` not one of PRECISIONS.
        ImportError: The `[openvino]` extra is missing.
    """

    RUNTIME = "OpenVINO"

    def __init__(self, net: RobustVideoMatting, precision: Precision = "f32") -> None:
        self._openvino = require_openvino()
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        super().__init__(net)
        self.precision = precision
        self._core = self._openvino.Core()
        self._models: dict[tuple[int, int, int, float], tuple[Any, list[list[int]]]] = {}
        self._compiled: dict[tuple[int, int, int, float, int], Any] = {}

    def _step(self, batch_size: int, height: int, width: int, ratio: float) -> tuple[Step, list[list[int]]]:
        shape = (batch_size, height, width, ratio)
        if shape not in self._models:
            start = time.perf_counter()
            step, inputs = rvm_step(self.net, width, height, ratio, batch_size)
            with quiet_exporter():
                model = self._openvino.convert_model(
                    step, example_input=inputs, input=[list(x.shape) for x in inputs]
                )
            self._models[shape] = model, [list(x.shape) for x in inputs[1:]]
            rank_zero_info(
                f"OpenVINO: RVM converted for {batch_size}x3x{height}x{width} at downsample_ratio {ratio} in "
                f"{time.perf_counter() - start:.0f} s (once per frame size and weights)"
            )
        model, state_shapes = self._models[shape]
        key = (*shape, torch.get_num_threads())
        if key not in self._compiled:
            self._compiled[key] = self._core.compile_model(
                model,
                "CPU",
                {
                    "INFERENCE_PRECISION_HINT": self.precision,
                    "PERFORMANCE_HINT": "LATENCY",
                    "INFERENCE_NUM_THREADS": key[-1],
                    "ENABLE_CPU_PINNING": False,
                },
            )
        compiled = self._compiled[key]

        def run(*inputs: Tensor) -> list[Tensor]:
            outputs = compiled([x.contiguous().numpy() for x in inputs])
            return [torch.from_numpy(outputs[index]) for index in range(len(compiled.outputs))]

        return run, state_shapes
