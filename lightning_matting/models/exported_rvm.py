"""A RobustVideoMatting run by an outside runtime on the CPU, one frame per call of a fixed-shape model.

The runtimes (ONNX Runtime: models/onnx_runtime.py; OpenVINO: models/openvino_runtime.py) share the call,
its checks and the frame loop; each builds the model of one batch size, frame size and ratio.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor, nn

from lightning_matting.models.rvm import RobustVideoMatting, auto_downsample_ratio

# One frame's matting step: (src [N,3,H,W], r1..r4) -> [fgr, pha, r1, r2, r3, r4], float32 on the CPU.
Step = Callable[..., list[Tensor]]


class ExportedRVM(nn.Module):
    """A RobustVideoMatting run by the runtime named `RUNTIME`, called like the network.

    Subclasses build, per batch size, frame size and ratio, a `Step` and the states' shapes (`_step`).

    Args:
        net: One of our RobustVideoMatting networks on the CPU; copied, so later changes to it are not seen.

    Raises:
        TypeError: `net` is not a RobustVideoMatting.
        ValueError: `net` is not on the CPU.
    """

    RUNTIME = "an outside runtime"

    def __init__(self, net: RobustVideoMatting) -> None:
        super().__init__()
        if not isinstance(net, RobustVideoMatting):
            raise TypeError(
                f"{type(self).__name__} runs our RobustVideoMatting networks, got {type(net).__name__}"
            )
        device = next(net.parameters()).device
        if device.type != "cpu":
            raise ValueError(
                f"{self.RUNTIME} runs here on the CPU and the network is on {device}: on a GPU use "
                "MattingModule(inference='fast')"
            )
        self.net = copy.deepcopy(net).float().eval().requires_grad_(False)  # the export folds its own copy

    def forward(
        self,
        src: Tensor,
        r1: Tensor | None = None,
        r2: Tensor | None = None,
        r3: Tensor | None = None,
        r4: Tensor | None = None,
        downsample_ratio: float | None = 1.0,
        segmentation_pass: bool = False,
    ) -> list[Tensor]:
        """Matte `src` [N,3,H,W] or [N,T,3,H,W] (float32 RGB in [0,1], CPU) given the states r1..r4.

        Returns:
            [fgr, pha, r1, r2, r3, r4] as RobustVideoMatting.forward returns them (fgr, pha shaped like src
            with 3 and 1 channels); states None start a video.

        Raises:
            ValueError: `segmentation_pass`, a src not float32 on the CPU, or not [N,3,H,W]/[N,T,3,H,W];
                states of other shapes or dtypes than the step's.
        """
        if segmentation_pass:
            raise ValueError(
                f"{self.RUNTIME} runs RVM's matting pass only; for seg use MattingModule(inference='fast')"
            )
        if src.device.type != "cpu" or src.dtype != torch.float32:
            raise ValueError(
                f"{self.RUNTIME} runs here on the CPU in float32; got src {src.dtype} on {src.device} (on a GPU "
                "or in half precision use MattingModule(inference='fast'))"
            )
        if src.dim() not in (4, 5) or src.size(-3) != 3:
            raise ValueError(f"src must be [N,3,H,W] or [N,T,3,H,W] (RGB), got shape {list(src.shape)}")
        height, width = src.shape[-2:]
        ratio = auto_downsample_ratio(height, width) if downsample_ratio is None else downsample_ratio
        step, shapes = self._step(src, ratio)
        states = [
            torch.zeros(shape) if state is None else state
            for state, shape in zip((r1, r2, r3, r4), shapes, strict=True)
        ]
        if [(list(state.shape), state.dtype) for state in states] != [
            (shape, torch.float32) for shape in shapes
        ]:
            raise ValueError(
                f"states r1..r4 must be float32 of shapes {shapes} (None: zeros) for src {list(src.shape)} at "
                f"downsample_ratio {ratio}, got {[(list(state.shape), state.dtype) for state in states]}"
            )
        frames = src.unbind(1) if src.dim() == 5 else (src,)
        fgr, pha = [], []
        for frame in frames:
            frame_fgr, frame_pha, *states = step(frame, *states)
            fgr.append(frame_fgr)
            pha.append(frame_pha)
        if src.dim() == 5:
            return [torch.stack(fgr, 1), torch.stack(pha, 1), *states]
        return [fgr[0], pha[0], *states]

    def _step(self, src: Tensor, ratio: float) -> tuple[Step, list[list[int]]]:
        """The step for the batch and frame size of the call's `src` [N,3,H,W] or [N,T,3,H,W], the ratio and
        torch's current thread count, and the states' shapes [N,C,h,w]."""
        raise NotImplementedError
