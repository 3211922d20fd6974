"""RobustVideoMatting run by ONNX Runtime on the CPU from its ONNX export (models/onnx_export.py).

Faster than the eager network on a CPU, about as fast as the torch inference copy (bench/RESULTS.md), and
within 1e-5 of eager. Only the matting pass is exported (not the segmentation pass).
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from lightning_matting.models.onnx_export import RVM_INPUT_NAMES, export_rvm, require_onnxruntime
from lightning_matting.models.rvm import RobustVideoMatting, auto_downsample_ratio


class OnnxRuntimeRVM(nn.Module):
    """A RobustVideoMatting run by ONNX Runtime on the CPU, called like the network.

    Each batch size, frame size, ratio and thread count gets its own export and session at its first call
    (export_rvm takes seconds; the log reports how long). The session runs torch's current intra-op thread count
    (`torch.get_num_threads()`), without spinning waits, so that it leaves idle cores to decoders and
    encoders.

    Args:
        net: One of our RobustVideoMatting networks on the CPU; copied, so later changes to it are not seen.

    Raises:
        TypeError: `net` is not a RobustVideoMatting.
        ValueError: `net` is not on the CPU.
        ImportError: The `[onnx]` extra is missing.
    """

    def __init__(self, net: RobustVideoMatting) -> None:
        super().__init__()
        self._onnxruntime = require_onnxruntime()
        if not isinstance(net, RobustVideoMatting):
            raise TypeError(f"OnnxRuntimeRVM runs our RobustVideoMatting networks, got {type(net).__name__}")
        device = next(net.parameters()).device
        if device.type != "cpu":
            raise ValueError(
                f"ONNX Runtime runs here on the CPU and the network is on {device}: on a GPU use "
                "MattingModule(inference='fast')"
            )
        self.net = copy.deepcopy(net).float().eval().requires_grad_(False)  # export_rvm folds its own copy
        self._models: dict[tuple[int, int, int, float], bytes] = {}
        self._sessions: dict[tuple[int, int, int, float, int], Any] = {}

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
            ValueError: `segmentation_pass`, a src not float32 on the CPU, or not [N,3,H,W]/[N,T,3,H,W].
        """
        if segmentation_pass:
            raise ValueError(
                "ONNX Runtime runs RVM's matting pass only; for seg use MattingModule(inference='fast')"
            )
        if src.device.type != "cpu" or src.dtype != torch.float32:
            raise ValueError(
                f"ONNX Runtime runs here on the CPU in float32; got src {src.dtype} on {src.device} (on a GPU "
                "or in half precision use MattingModule(inference='fast'))"
            )
        if src.dim() not in (4, 5) or src.size(-3) != 3:
            raise ValueError(f"src must be [N,3,H,W] or [N,T,3,H,W] (RGB), got shape {list(src.shape)}")
        height, width = src.shape[-2:]
        ratio = auto_downsample_ratio(height, width) if downsample_ratio is None else downsample_ratio
        session = self._session(src.size(0), height, width, ratio)
        shapes = [list(node.shape) for node in session.get_inputs()[1:]]
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
            feeds = dict(zip(RVM_INPUT_NAMES, (frame, *states), strict=True))
            outputs = session.run(None, {name: x.contiguous().numpy() for name, x in feeds.items()})
            frame_fgr, frame_pha, *states = (torch.from_numpy(x) for x in outputs)
            fgr.append(frame_fgr)
            pha.append(frame_pha)
        if src.dim() == 5:
            return [torch.stack(fgr, 1), torch.stack(pha, 1), *states]
        return [fgr[0], pha[0], *states]

    def _session(self, batch_size: int, height: int, width: int, ratio: float) -> Any:
        """The session for these shapes and torch's thread count, exported at the shapes' first call."""
        shape = (batch_size, height, width, ratio)
        key = (*shape, torch.get_num_threads())
        if key not in self._sessions:
            if shape not in self._models:
                start = time.perf_counter()
                self._models[shape] = export_rvm(self.net, width, height, ratio, batch_size)
                rank_zero_info(
                    f"ONNX Runtime: RVM exported for {batch_size}x3x{height}x{width} at downsample_ratio {ratio} "
                    f"in {time.perf_counter() - start:.0f} s (once per frame size and weights)"
                )
            options = self._onnxruntime.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = key[-1], 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self._sessions[key] = self._onnxruntime.InferenceSession(
                self._models[shape], options, providers=["CPUExecutionProvider"]
            )
        return self._sessions[key]
