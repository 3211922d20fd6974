"""Our networks run by OpenVINO on the CPU (the `[openvino]` extra), BatchNorm folded.

RobustVideoMatting: the matting step (models/onnx_export.py's `rvm_step`, the state as inputs and outputs)
runs in OpenVINO; only the matting pass (not the segmentation pass). BackgroundMattingV2: the base network
(backbone, ASPP, decoder: `MattingBase.coarse`) runs in OpenVINO and MattingRefine's refiner, whose patch
gather and scatter OpenVINO does not convert, in torch. Each part is converted from the torch module with
`openvino.convert_model` at the shapes of its first call and compiled for the CPU in float32 or bfloat16, or
quantized to int8 by NNCF's post-training quantization, calibrated on that first call's frames.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
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

Precision = Literal["f32", "bf16", "int8"]
PRECISIONS: tuple[Precision, ...] = ("f32", "bf16", "int8")
INSTALL_HINT = "pip install 'lightning-matting[openvino]'"
# A part's inputs for one call, float32 on the CPU, in the order of its forward.
Inputs = tuple[Tensor, ...]


def require_openvino() -> Any:
    """The openvino module.

    Raises:
        ImportError: openvino is not installed.
    """
    try:
        return importlib.import_module("openvino")
    except ImportError as error:
        raise ImportError(f"OpenVINO inference needs openvino ({INSTALL_HINT}): {error}") from error


def require_nncf() -> Any:
    """The nncf module (NNCF, OpenVINO's quantizer), its logger ("nncf") quietened to errors.

    Raises:
        ImportError: nncf is not installed.
    """
    try:
        nncf = importlib.import_module("nncf")
    except ImportError as error:
        raise ImportError(f"OpenVINO int8 inference needs nncf ({INSTALL_HINT}): {error}") from error
    logging.getLogger("nncf").setLevel(logging.ERROR)  # not nncf.set_log_level: it sets every handler's level
    return nncf


class CompiledModels:
    """OpenVINO models of one network's part, converted per input shapes and compiled per thread count.

    Compiled for the CPU with performance hint LATENCY, `INFERENCE_NUM_THREADS` torch's intra-op thread
    count at the call (`torch.get_num_threads()`), threads not pinned to cores (decoders and encoders share
    them). Inputs and outputs stay float32 in every precision. "int8" quantizes each converted model with
    NNCF's post-training static quantization (weights and activations of the convolutions and matrix products
    in int8, the rest in float32), calibrated on the inputs `get` is given at the shape's first call.

    Args:
        precision: "f32"; "bf16" (on CPUs with AVX512_BF16 or AMX); "int8" (needs nncf).
        name: What the log calls the part when it is converted.

    Raises:
        ValueError: `precision` is not one of PRECISIONS.
        ImportError: The `[openvino]` extra is missing (openvino, or nncf for "int8").
    """

    def __init__(self, precision: Precision, name: str) -> None:
        self._openvino = require_openvino()
        check_choice("precision", precision, PRECISIONS)
        self._nncf = require_nncf() if precision == "int8" else None
        self.precision, self.name = precision, name
        self._core = self._openvino.Core()
        self._models: dict[tuple, Any] = {}
        self._compiled: dict[tuple, Any] = {}

    def get(
        self,
        shape: tuple,
        part: Callable[[], tuple[nn.Module, Inputs]],
        calibration: Callable[[nn.Module, Inputs], list[Inputs]],
    ) -> Any:
        """The compiled model for `shape` (a key of the input shapes) and torch's thread count.

        Args:
            shape: The key of the input shapes.
            part: At the shape's first call, gives the module to convert and its example inputs.
            calibration: For "int8", at the shape's first call, gives the inputs to calibrate on from the
                module and example inputs `part()` gave (float32 CPU tensors of the example inputs' shapes).

        Returns:
            OpenVINO's compiled model (called with a list of float32 arrays).
        """
        if shape not in self._models:
            start = time.perf_counter()
            module, inputs = part()
            with quiet_exporter(), warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.trace, which it runs
                model = self._openvino.convert_model(
                    module, example_input=inputs, input=[list(x.shape) for x in inputs]
                )
            done = "converted"
            if self._nncf is not None:
                items = [[x.contiguous().numpy() for x in item] for item in calibration(module, inputs)]
                with contextlib.redirect_stdout(io.StringIO()):  # NNCF's progress bars
                    model = self._nncf.quantize(
                        model, self._nncf.Dataset(items), subset_size=len(items), fast_bias_correction=True
                    )
                done = f"converted and quantized to int8 (calibrated on {len(items)} input{'s' * (len(items) > 1)})"
            self._models[shape] = model
            sizes = ", ".join("x".join(map(str, x.shape)) for x in inputs)
            rank_zero_info(
                f"OpenVINO: {self.name} {done} for {sizes} in {time.perf_counter() - start:.0f} s (once per "
                "frame size and weights)"
            )
        key = (*shape, torch.get_num_threads())
        if key not in self._compiled:
            self._compiled[key] = self._core.compile_model(
                self._models[shape],
                "CPU",
                {
                    # int8: the quantized operations run in int8, the others in float32
                    "INFERENCE_PRECISION_HINT": "f32" if self.precision == "int8" else self.precision,
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
    (`CompiledModels`). In "int8" it is calibrated on that call's frames, the state carried from zeros by the
    float32 step.

    Args:
        net: One of our RobustVideoMatting networks on the CPU; copied, so later changes to it are not seen.
        precision: "f32"; "bf16" (on CPUs with AVX512_BF16 or AMX); "int8" (needs nncf).

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

    def _step(self, src: Tensor, ratio: float) -> tuple[Step, list[list[int]]]:
        batch_size, height, width = src.size(0), *src.shape[-2:]
        compiled = self._models.get(
            (batch_size, height, width, ratio),
            lambda: rvm_step(self.net, width, height, ratio, batch_size),
            lambda step, zeros: _step_inputs(step, zeros, src),
        )
        shapes = [list(port.get_shape()) for port in compiled.inputs[1:]]
        return lambda *inputs: run_compiled(compiled, *inputs), shapes


def _step_inputs(step: nn.Module, zeros: Inputs, src: Tensor) -> list[Inputs]:
    """The inputs (frame, r1..r4) RVM's float32 `step` sees over the frames of `src` [N,3,H,W] or [N,T,3,H,W],
    the state carried from `zeros` (the step's example inputs): int8's calibration data."""
    _, *states = zeros
    items = []
    with torch.no_grad():
        for frame in src.unbind(1) if src.dim() == 5 else (src,):
            items.append((frame, *states))
            _, _, *states = step(frame, *states)
    return items


class OpenVinoBGMv2(nn.Module):
    """A MattingBase or MattingRefine whose base network runs in OpenVINO on the CPU, called like it.

    The base network (`MattingBase.coarse`: backbone, ASPP, decoder) is converted per batch and frame size
    at its first call and compiled per thread count (`CompiledModels`); the rest (MattingRefine's
    downsampling and refiner, in any refine mode; the outputs' clamps) runs in torch, on a BatchNorm-folded
    copy.

    Args:
        net: One of our MattingBase or MattingRefine networks on the CPU; copied, so later changes to it
            (weights, refine settings) are not seen.
        precision: "f32"; "bf16" (on CPUs with AVX512_BF16 or AMX); "int8" (needs nncf), calibrated on the
            first call of each batch and frame size.

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
        compiled = self._models.get(
            (*src.shape,), lambda: (_Coarse(self.net), (src, bgr)), lambda *_: [(src, bgr)]
        )
        return run_compiled(compiled, src, bgr)[0]


class _Coarse(nn.Module):
    """MattingBase.coarse as a module's forward, for conversion: (src, bgr) -> [B,37,H,W]."""

    def __init__(self, net: MattingBase) -> None:
        super().__init__()
        self.net = net

    def forward(self, src: Tensor, bgr: Tensor) -> Tensor:
        return self.net.coarse(src, bgr)
