"""Our networks exported to ONNX, BatchNorm folded, for one frame size (the `[onnx]` extra).

RobustVideoMatting, one frame per call at one downsample ratio (the recurrent state's shapes follow from the
size and ratio), the state as explicit inputs and outputs, named as the RVM project names them:

    inputs   src [N,3,H,W] (RGB in [0,1]), r1i, r2i, r3i, r4i (zeros start a video)
    outputs  fgr [N,3,H,W], pha [N,1,H,W] (in [0,1]), r1o, r2o, r3o, r4o (the next frame's r1i..r4i)

Only RVM's matting pass is exported (not the segmentation pass). BackgroundMattingV2 (as the BGMv2 project
names them):

    inputs   src, bgr [N,3,H,W] (RGB in [0,1]; H and W multiples of 4)
    outputs  MattingBase: pha, fgr, err, hid; MattingRefine: pha, fgr, pha_sm, fgr_sm, err_sm, ref_sm
             (the networks' tuples)

A MattingRefine exports with its refine settings fixed ("sampling" or "full"; "thresholding" refines a
number of patches that depends on the data, which a static graph cannot hold). Every file's metadata holds
width, height and batch_size, and the family's settings.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import inspect
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightning_matting.models.bgmv2 import MattingBase, MattingRefine
from lightning_matting.models.inference import fold_batch_norms
from lightning_matting.models.rvm import RobustVideoMatting, auto_downsample_ratio
from lightning_matting.validators import check_int

RVM_INPUT_NAMES = ("src", "r1i", "r2i", "r3i", "r4i")
RVM_OUTPUT_NAMES = ("fgr", "pha", "r1o", "r2o", "r3o", "r4o")
BGMV2_INPUT_NAMES = ("src", "bgr")
BASE_OUTPUT_NAMES = ("pha", "fgr", "err", "hid")
REFINE_OUTPUT_NAMES = ("pha", "fgr", "pha_sm", "fgr_sm", "err_sm", "ref_sm")
INSTALL_HINT = "pip install 'lightning-matting[onnx]'"


def require_onnxruntime() -> Any:
    """The onnxruntime module.

    Raises:
        ImportError: onnxruntime or the exporter's packages (onnx, onnxscript) are not installed.
    """
    if "dynamo" not in inspect.signature(torch.onnx.export).parameters:
        raise ImportError(
            f"ONNX export needs torch.onnx's dynamo exporter (torch >= 2.5), got torch {torch.__version__}"
        )
    try:
        for name in ("onnx", "onnxscript"):
            importlib.import_module(name)
        return importlib.import_module("onnxruntime")
    except ImportError as error:
        raise ImportError(
            f"ONNX export and ONNX Runtime need onnxruntime, onnx and onnxscript ({INSTALL_HINT}): {error}"
        ) from error


class MattingStep(nn.Module):
    """One call of RVM's matting pass at a fixed ratio: (src, r1..r4) -> (fgr, pha, r1..r4)."""

    def __init__(self, net: RobustVideoMatting, downsample_ratio: float) -> None:
        super().__init__()
        self.net, self.downsample_ratio = net, downsample_ratio

    def forward(self, src: Tensor, r1: Tensor, r2: Tensor, r3: Tensor, r4: Tensor) -> tuple[Tensor, ...]:
        return tuple(self.net(src, r1, r2, r3, r4, self.downsample_ratio))


def export_onnx(
    net: nn.Module,
    width: int,
    height: int,
    downsample_ratio: float | None = None,
    batch_size: int = 1,
) -> bytes:
    """The ONNX model (bytes) of one of our networks, BatchNorm folded, for frames of one size.

    Args:
        net: RobustVideoMatting, MattingBase or MattingRefine, on the CPU, in any mode (it is copied, not
            changed).
        width: Frame width in pixels (>= 1; BGMv2: a multiple of 4).
        height: Frame height in pixels (>= 1; BGMv2: a multiple of 4).
        downsample_ratio: RVM's internal scale in (0, 1]; None: the automatic one (longest side to 512 px).
            None for BGMv2 (its refine settings are the network's).
        batch_size: N, the frames (RVM: the videos) matted side by side per call (>= 1).

    Returns:
        A serialized ONNX ModelProto with the inputs and outputs of this module's docstring.

    Raises:
        TypeError: `net` is not one of our networks.
        ValueError: A size or ratio out of range, a BGMv2 refine mode of "thresholding", or `net` not on the
            CPU.
        ImportError: The `[onnx]` extra is missing.
    """
    if isinstance(net, RobustVideoMatting):
        return export_rvm(net, width, height, downsample_ratio, batch_size)
    if not isinstance(net, MattingBase):
        raise TypeError(
            f"export_onnx exports our RobustVideoMatting, MattingBase and MattingRefine networks, got "
            f"{type(net).__name__}"
        )
    if downsample_ratio is not None:
        raise ValueError(
            f"downsample_ratio is RobustVideoMatting's; a {type(net).__name__} exports with None, got "
            f"{downsample_ratio!r}"
        )
    _check_export(net, width, height, batch_size)
    if width % 4 or height % 4:
        raise ValueError(
            f"BackgroundMattingV2 exports need a width and height that are multiples of 4 (MattingModule pads "
            f"frames to them), got {width}x{height}"
        )
    metadata: dict[str, object] = {"width": width, "height": height, "batch_size": batch_size}
    if isinstance(net, MattingRefine):
        if net.refiner.mode == "thresholding":
            raise ValueError(
                "refine_mode 'thresholding' refines a number of patches that depends on the frame, which an "
                "ONNX graph cannot hold: export with 'sampling' or 'full'"
            )
        metadata |= {"backbone_scale": net.backbone_scale, "refine_mode": net.refiner.mode}
        if net.refiner.mode == "sampling":
            metadata |= {
                "refine_sample_pixels": net.refiner.sample_pixels,
                "refine_prevent_oversampling": net.refiner.prevent_oversampling,
            }
    folded = folded_copy(net)
    src, bgr = torch.zeros(2, batch_size, 3, height, width)  # two tensors: one passed twice is one input
    with torch.no_grad():
        folded(src, bgr)  # the network's own checks, with its messages
    names = REFINE_OUTPUT_NAMES if isinstance(net, MattingRefine) else BASE_OUTPUT_NAMES
    return _export(folded, (src, bgr), BGMV2_INPUT_NAMES, names, metadata)


def export_rvm(
    net: RobustVideoMatting,
    width: int,
    height: int,
    downsample_ratio: float | None = None,
    batch_size: int = 1,
) -> bytes:
    """`export_onnx` for a RobustVideoMatting: its matting pass, the state as inputs and outputs.

    Returns:
        A serialized ONNX ModelProto; its metadata holds width, height, downsample_ratio and batch_size.

    Raises:
        TypeError: `net` is not a RobustVideoMatting.
        ValueError: A size or ratio out of range, or `net` not on the CPU.
        ImportError: The `[onnx]` extra is missing.
    """
    if not isinstance(net, RobustVideoMatting):
        raise TypeError(
            f"export_rvm exports our RobustVideoMatting networks (rvm-*), got {type(net).__name__}"
        )
    _check_export(net, width, height, batch_size)
    ratio = auto_downsample_ratio(height, width) if downsample_ratio is None else downsample_ratio
    step, inputs = rvm_step(net, width, height, ratio, batch_size)
    metadata = {"width": width, "height": height, "downsample_ratio": ratio, "batch_size": batch_size}
    return _export(step, inputs, RVM_INPUT_NAMES, RVM_OUTPUT_NAMES, metadata)


def rvm_step(
    net: RobustVideoMatting, width: int, height: int, downsample_ratio: float, batch_size: int
) -> tuple[MattingStep, tuple[Tensor, ...]]:
    """RVM's matting step at `downsample_ratio`, BatchNorm folded, and its example inputs (zeros).

    Returns:
        The step (on a frozen float32 copy of `net`) and (src [N,3,H,W], r1..r4 [N,C,h,w]) float32 zeros.

    Raises:
        ValueError: A ratio out of (0, 1], or one that shrinks the frame below a pixel.
    """
    folded = folded_copy(net)
    src = torch.zeros(batch_size, 3, height, width)
    with torch.no_grad():
        _, _, *states = folded(src, downsample_ratio=downsample_ratio)  # checks the ratio; the state shapes
    return MattingStep(folded, downsample_ratio), (src, *(torch.zeros_like(state) for state in states))


def _check_export(net: nn.Module, width: int, height: int, batch_size: int) -> None:
    for name, value in (("width", width), ("height", height), ("batch_size", batch_size)):
        check_int(name, value, minimum=1)
    device = next(net.parameters()).device
    if device.type != "cpu":
        raise ValueError(f"ONNX export runs on a network on the CPU, got one on {device}")
    require_onnxruntime()


def folded_copy(net: nn.Module) -> nn.Module:
    """A frozen float32 eval copy of `net` with BatchNorm folded (`fold_batch_norms`)."""
    return fold_batch_norms(copy.deepcopy(net).float().eval()).requires_grad_(False)


def _export(
    module: nn.Module,
    inputs: tuple[Tensor, ...],
    input_names: tuple[str, ...],
    output_names: tuple[str, ...],
    metadata: dict[str, object],
) -> bytes:
    """torch.onnx's (dynamo) export of `module` at `inputs`' shapes, `metadata` in the model's properties."""
    with quiet_exporter():
        program = torch.onnx.export(
            module.eval(),
            inputs,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamo=True,
            verbose=False,
        )
    model = program.model_proto
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    return model.SerializeToString()


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """Silence the exporter's notes that say nothing about our network (torchvision ops it skips, tracing)."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            yield
    finally:
        registration.setLevel(level)


def save_onnx(
    net: nn.Module,
    path: str | Path,
    width: int,
    height: int,
    downsample_ratio: float | None = None,
    batch_size: int = 1,
) -> Path:
    """Write `export_onnx(net, width, height, downsample_ratio, batch_size)` to `path` (.onnx); returns it.

    Raises:
        ValueError: `path` does not end in .onnx, or as `export_onnx`.
    """
    path = Path(path)
    if path.suffix.lower() != ".onnx":
        raise ValueError(f"path must end in .onnx, got {str(path)!r}")
    model = export_onnx(net, width, height, downsample_ratio, batch_size)
    path.write_bytes(model)
    return path
