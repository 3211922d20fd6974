"""Which network a MattingModule runs: in training its network, in eval what its `inference` setting says."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from lightning_matting.models.auto_inference import AutoInference
from lightning_matting.models.bgmv2 import MattingBase, MattingRefine
from lightning_matting.models.inference import can_rewrite, inference_copy
from lightning_matting.models.onnx_export import require_onnxruntime
from lightning_matting.models.onnx_runtime import OnnxRuntimeRVM
from lightning_matting.models.openvino_runtime import (
    OpenVinoBGMv2,
    OpenVinoRVM,
    require_nncf,
    require_openvino,
)
from lightning_matting.models.openvino_runtime import Precision as OpenVinoPrecision
from lightning_matting.models.precision import Precision, bf16_copy
from lightning_matting.models.rvm import RobustVideoMatting
from lightning_matting.validators import check_choice

Inference = Literal["fast", "eager", "auto", "onnxruntime", "openvino", "openvino-bf16", "openvino-int8"]
INFERENCE_MODES: tuple[Inference, ...] = (
    "fast",
    "eager",
    "auto",
    "onnxruntime",
    "openvino",
    "openvino-bf16",
    "openvino-int8",
)
# The OpenVINO modes and the precision each compiles in.
OPENVINO_PRECISIONS: dict[str, OpenVinoPrecision] = {
    "openvino": "f32",
    "openvino-bf16": "bf16",
    "openvino-int8": "int8",
}
# The modes an outside runtime runs on the CPU (for RVM its matting pass only): what it runs.
RUNTIMES: dict[str, str] = {
    "onnxruntime": "an ONNX export",
    "openvino": "an OpenVINO model",
    "openvino-bf16": "an OpenVINO model",
    "openvino-int8": "an OpenVINO model",
}
# The networks each runtime runs, as the refusal names them.
_RUNTIME_NETWORKS: dict[str, tuple[tuple[type[nn.Module], ...], str]] = {
    "onnxruntime": ((RobustVideoMatting,), "our RobustVideoMatting networks (rvm-*)"),
    "openvino": (
        (RobustVideoMatting, MattingBase),
        "our RobustVideoMatting and BackgroundMattingV2 networks",
    ),
    "openvino-bf16": (
        (RobustVideoMatting, MattingBase),
        "our RobustVideoMatting and BackgroundMattingV2 networks",
    ),
    "openvino-int8": (
        (RobustVideoMatting, MattingBase),
        "our RobustVideoMatting and BackgroundMattingV2 networks",
    ),
}


def check_inference(inference: object, net: nn.Module, compile: bool) -> Inference:
    """`inference` if `net` can run it (with `compile`).

    Raises:
        ValueError: Not one of INFERENCE_MODES; one of RUNTIMES for a network it does not run ("onnxruntime":
            our RVM; the OpenVINO modes: our RVM and BGMv2); one of RUNTIMES or "auto" with `compile`.
        ImportError: "onnxruntime" without the `[onnx]` extra installed, an OpenVINO mode without the
            `[openvino]` extra (openvino, and nncf for "openvino-int8").
    """
    check_choice("inference", inference, INFERENCE_MODES)
    if inference == "auto" and compile:
        raise ValueError(
            "compile=True compiles torch networks and inference='auto' times other paths too (OpenVINO, bf16): "
            "choose one"
        )
    if inference in RUNTIMES:
        families, names = _RUNTIME_NETWORKS[inference]
        if not isinstance(net, families):
            raise ValueError(
                f"inference={inference!r} runs {names}; {type(net).__name__} runs with 'fast' or 'eager'"
            )
        if compile:
            raise ValueError(
                f"compile=True compiles torch networks and inference={inference!r} runs {RUNTIMES[inference]}: "
                "choose one"
            )
        if inference == "onnxruntime":
            require_onnxruntime()
        else:
            require_openvino()
        if inference == "openvino-int8":
            require_nncf()
    return inference


class InferenceNetworks:
    """The networks a module runs: its training network (compiled or not) and a cached one for eval.

    What eval runs for our networks: "fast", the inference copy (`inference_copy`); "auto", the fastest of
    the paths this CPU runs whose pha stays within 2e-3 of "fast"'s, timed at the first call
    (`AutoInference`); "onnxruntime", RVM
    through ONNX Runtime (`OnnxRuntimeRVM`); "openvino", "openvino-bf16" and "openvino-int8", RVM through
    OpenVINO in float32, bfloat16 or int8 (`OpenVinoRVM`), BGMv2's base network likewise and its refiner in torch (`OpenVinoBGMv2`); "eager", the network itself. It is rebuilt when the network
    changes: a parameter or buffer replaced, moved or modified in place (an optimizer step,
    `load_state_dict`: their version counters), or a BGMv2 refine setting changed. It is dropped with
    `clear()`, e.g. on entering training.

    Args:
        inference: One of INFERENCE_MODES (checked by `check_inference`).
        compile: Compile what runs with `torch.compile(dynamic=False)` (the training network and the inference
            copy): one graph per input shape.
        precision: The "fast" copy's number format: "fp32", or "bf16" (`bf16_copy`; checked by
            `check_precision`).
    """

    def __init__(self, inference: Inference, compile: bool, precision: Precision = "fp32") -> None:
        self.inference = inference
        self.compile = compile
        self.precision = precision
        self._copy: nn.Module | None = None
        self._copy_key: tuple | None = None
        self._compiled: dict[int, nn.Module] = {}

    @property
    def rewrite(self) -> bool:
        """Whether eval runs something other than the training network for our networks."""
        return self.inference != "eager"

    def for_training(self, net: nn.Module) -> nn.Module:
        """`net`, compiled when `compile` (the compiled module shares its parameters)."""
        return self._compiled_once(net) if self.compile else net

    def for_inference(self, net: nn.Module) -> nn.Module:
        """What eval mode runs for `net`: for our networks what `inference` says, else `for_training`."""
        if not (self.rewrite and can_rewrite(net)):
            return self.for_training(net)
        key = _network_key(net)
        if self._copy is None or key != self._copy_key:
            self._copy, self._copy_key = self._build(net), key
        return self._copy

    def __getstate__(self) -> dict:
        """Copies and pickles (deepcopy, ddp_spawn, torch.save of a module) leave the cached networks behind:
        an ONNX Runtime session or OpenVINO model cannot be pickled, and they are rebuilt at the next call."""
        return {**self.__dict__, "_copy": None, "_copy_key": None, "_compiled": {}}

    def clear(self) -> None:
        """Drop the cached eval network (its memory) until the next `for_inference`."""
        self._copy, self._copy_key = None, None

    def _build(self, net: nn.Module) -> nn.Module:
        if self.inference == "auto":
            return AutoInference(net)
        if self.inference == "onnxruntime":
            return OnnxRuntimeRVM(net)
        if self.inference in OPENVINO_PRECISIONS:
            precision = OPENVINO_PRECISIONS[self.inference]
            return (
                OpenVinoRVM(net, precision)
                if isinstance(net, RobustVideoMatting)
                else OpenVinoBGMv2(net, precision)
            )
        fast = inference_copy(net) if self.precision == "fp32" else bf16_copy(net)
        return _compile(fast) if self.compile else fast

    def _compiled_once(self, net: nn.Module) -> nn.Module:
        if id(net) not in self._compiled:
            self._compiled = {id(net): _compile(net)}
        return self._compiled[id(net)]


def _compile(net: nn.Module) -> nn.Module:
    """torch.compile with static shapes: a graph per frame size (and RVM clip length), as a video keeps its
    size; a second size would otherwise make a dynamic-shape graph, slower to build and to run here."""
    return torch.compile(net, dynamic=False)


def _network_key(net: nn.Module) -> tuple:
    """What the inference copy of `net` depends on: every tensor's storage and version, the refine settings."""
    tensors = tuple(
        (t.data_ptr(), t._version, t.dtype, t.device) for t in (*net.parameters(), *net.buffers())
    )
    settings = ()
    if isinstance(net, MattingRefine):
        refiner = net.refiner
        settings = (net.backbone_scale, refiner.mode, refiner.sample_pixels, refiner.threshold)
        settings += (refiner.prevent_oversampling,)
    return tensors, settings
