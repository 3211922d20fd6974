"""RobustVideoMatting run by ONNX Runtime on the CPU from its ONNX export (models/onnx_export.py).

Faster than the eager network on a CPU, about as fast as the torch inference copy (bench/RESULTS.md), and
within 1e-5 of eager. Only the matting pass is exported (not the segmentation pass).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from lightning_matting.models.exported_rvm import ExportedRVM, Step
from lightning_matting.models.onnx_export import RVM_INPUT_NAMES, export_rvm, require_onnxruntime
from lightning_matting.models.rvm import RobustVideoMatting


class OnnxRuntimeRVM(ExportedRVM):
    """A RobustVideoMatting run by ONNX Runtime on the CPU, called like the network (`ExportedRVM`).

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

    RUNTIME = "ONNX Runtime"

    def __init__(self, net: RobustVideoMatting) -> None:
        self._onnxruntime = require_onnxruntime()
        super().__init__(net)
        self._models: dict[tuple[int, int, int, float], bytes] = {}
        self._sessions: dict[tuple[int, int, int, float, int], Any] = {}

    def _step(self, src: Tensor, ratio: float) -> tuple[Step, list[list[int]]]:
        session = self._session(src.size(0), *src.shape[-2:], ratio)

        def step(*inputs: Tensor) -> list[Tensor]:
            feeds = {name: x.contiguous().numpy() for name, x in zip(RVM_INPUT_NAMES, inputs, strict=True)}
            return [torch.from_numpy(x) for x in session.run(None, feeds)]

        return step, [list(node.shape) for node in session.get_inputs()[1:]]

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
