"""Our networks run by OpenVINO on the CPU (the `[openvino]` extra), BatchNorm folded.

RobustVideoMatting: the matting step (models/onnx_export.py's `rvm_step`, the state as inputs and outputs)
runs in OpenVINO; only the matting pass (not the segmentation pass). BackgroundMattingV2: the base network
(backbone, ASPP, decoder: `MattingBase.coarse`) runs in OpenVINO and MattingRefine's refiner, whose patch
gather and scatter OpenVINO does not convert, in torch. Each part is converted from the torch module with
`openvino.convert_model` at the shapes of its first call and compiled for the CPU in float32 or bfloat16.
"""

from __future__ import annotations

import importlib
import time
import warnings
from collections.abc import Callable
from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from lightning_matting.models.bgmv2 import MattingBase, MattingRefine, check_inputs
from lightning_matting.models.exported_rvm import ExportedRVM, Step
from lightning_matting.models.onnx_export import folded_copy, quiet_exporter, rvm_step
from lightning_matting.models.rvm import RobustVideoMatting
from lightning_matting.validators import check_choice

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


class CompiledModels:
    """OpenVINO models of one network's part, converted per input shapes and compiled per thread count.

    Compiled for the CPU with performance hint LATENCY, `INFERENCE_NUM_THREADS` torch's intra-op thread
    count at the call (`torch.get_num_threads()`), threads not pinned to cores (decoders and encoders share
    them). Inputs and outputs stay float32 in either precision.

    Args:
        precision: OpenVINO's inference precision: "f32", or "bf16" (on CPUs with AVX512_BF16 or AMX).
        name: What the log calls the part when it is converted.

    Raises:
        ValueError: `precision` is not one of PRECISIONS.
        ImportError: The `[openvino]` extra is missing.
    """

    def __init__(self, precision: Precision, name: str) -> None:
        self._openvino = require_openvino()
        check_choice("precision", precision, PRECISIONS)
        self.precision, self.name = precision, name
        self._core = self._openvino.Core()
        self._models: dict[tuple, Any] = {}
        self._compiled: dict[tuple, Any] = {}

    def get(self, shape: tuple, part: Callable[[], tuple[nn.Module, tuple[Tensor, ...]]]) -> Any:
        """The compiled model for `shape` (a key of the input shapes) and torch's thread count; at the shape's
        first call `part()` gives the module to convert and its example inputs (float32, CPU)."""
        if shape not in self._models:
            start = time.perf_counter()
            module, inputs = part()
            with quiet_exporter(), warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.trace, which it runs
                self._models[shape] = self._openvino.convert_model(
                    module, example_input=inputs, input=[list(x.shape) for x in inputs]
                )
            sizes = ", ".join("x".join(map(str, x.shape)) for x in inputs)
            rank_zero_info(
                f"OpenVINO: {self.name} converted for {sizes} in {time.perf_counter() - start:.0f} s (once per "
                "frame size and weights)"
            )
        key = (*shape, torch.get_num_threads())
        if key not in self._compiled:
            self._compiled[key] = self._core.compile_model(
                self._models[shape],
                "CPU",
                {
                    "INFERENCE_PRECISION_HINT": self.precision,
                    "PERFORMANCE_HINT": "LATENCY",
                    "INFERENCE_NUM_THREADS": key[-1],
                    "ENABLE_CPU_PINNING": False,
                },
            )
        return self._compiled[key]


def run_compiled(compiled: Any, *inputs: Tensor) -> list[Tensor]:
    """A compiled model's outputs (float32 tensors, their own memory) for float32 CPU `inputs`."""
    outputs = compiled([x.contiguous().numpy() for x in inputs])
    return [torch.from_numpy(outputs[index]) for index in range(len(compiled.outputs))]


class OpenVinoRVM(ExportedRVM):
    """A RobustVideoMatting run by OpenVINO on the CPU, called like the network (`ExportedRVM`).

    Each batch size, frame size and ratio is converted at its first call, and compiled per thread count
    (`CompiledModels`).

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
        self._models = CompiledModels(precision, "RVM")
        super().__init__(net)
        self.precision = precision

    def _step(self, batch_size: int, height: int, width: int, ratio: float) -> tuple[Step, list[list[int]]]:
        compiled = self._models.get(
            (batch_size, height, width, ratio), lambda: rvm_step(self.net, width, height, ratio, batch_size)
        )
        shapes = [list(port.get_shape()) for port in compiled.inputs[1:]]
        return lambda *inputs: run_compiled(compiled, *inputs), shapes


class OpenVinoBGMv2(nn.Module):
    """A MattingBase or MattingRefine whose base network runs in OpenVINO on the CPU, called like it.

    The base network (`MattingBase.coarse`: backbone, ASPP, decoder) is converted per batch and frame size
    at its first call and compiled per thread count (`CompiledModels`); the rest (MattingRefine's
    downsampling and refiner, in any refine mode; the outputs' clamps) runs in torch, on a BatchNorm-folded
    copy.

    Args:
        net: One of our MattingBase or MattingRefine networks on the CPU; copied, so later changes to it
            (weights, refine settings) are not seen.
        precision: OpenVINO's inference precision: "f32", or "bf16" (on CPUs with AVX512_BF16 or AMX).

    Raises:
        TypeError: `net` is not a MattingBase.
        ValueError: `net` is not on the CPU, or `precision` not one of PRECISIONS.
        ImportError: The `[openvino]` extra is missing.
    """

    def __init__(self, net: MattingBase, precision: Precision = "f32") -> None:
        super().__init__()
        self._models = CompiledModels(precision, f"{type(net).__name__}'s base network")
        if not isinstance(net, MattingBase):
            raise TypeError(
                f"OpenVinoBGMv2 runs our MattingBase and MattingRefine networks, got {type(net).__name__}"
            )
        device = next(net.parameters()).device
        if device.type != "cpu":
            raise ValueError(
                f"OpenVINO runs here on the CPU and the network is on {device}: on a GPU use "
                "MattingModule(inference='fast')"
            )
        self.net = folded_copy(net)
        self.precision = precision

    def forward(self, src: Tensor, bgr: Tensor) -> tuple[Tensor, ...]:
        """The network's outputs for src, bgr [B,3,H,W] (float32 RGB in [0,1], CPU; MattingRefine: H and W
        multiples of 4): MattingBase's (pha, fgr, err, hid), MattingRefine's six.

        Raises:
            ValueError: src or bgr not float32 on the CPU, or of other shapes than the network takes.
        """
        refine = isinstance(self.net, MattingRefine)
        check_inputs(src, bgr, multiple_of=4 if refine else 1)
        if src.device.type != "cpu" or src.dtype != torch.float32 or bgr.dtype != torch.float32:
            raise ValueError(
                f"OpenVINO runs here on the CPU in float32; got src {src.dtype} on {src.device} and bgr "
                f"{bgr.dtype} (on a GPU or in half precision use MattingModule(inference='fast'))"
            )
        if not refine:
            return self.net.base_outputs(src, self._coarse(src, bgr))
        src_sm, bgr_sm = self.net.downsampled(src, bgr)
        return self.net.refined(src, bgr, src_sm, self._coarse(src_sm, bgr_sm))

    def _coarse(self, src: Tensor, bgr: Tensor) -> Tensor:
        compiled = self._models.get((*src.shape,), lambda: (_Coarse(self.net), (src, bgr)))
        return run_compiled(compiled, src, bgr)[0]


class _Coarse(nn.Module):
    """MattingBase.coarse as a module's forward, for conversion: (src, bgr) -> [B,37,H,W]."""

    def __init__(self, net: MattingBase) -> None:
        super().__init__()
        self.net = net

    def forward(self, src: Tensor, bgr: Tensor) -> Tensor:
        return self.net.coarse(src, bgr)
