"""The one place that turns tensor batches into the samples an encoder backend takes (uint8 by default).

All arithmetic runs on the tensor's device, so a GPU batch crosses to the host once, in its sample type
(uint8 for 8-bit outputs), through one pinned, non-blocking copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import torch

from lightning_matting.full_scale import FULL_SCALE

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# What an encoder takes: uint8 in [0, 255] (8-bit outputs), uint16 in [0, 65535] (deeper integer outputs,
# which the encoder reduces to its depth), float32 in [0, 1] (float outputs such as OpenEXR).
Samples = Literal["uint8", "uint16", "float32"]
_DTYPES = {"uint8": torch.uint8, "uint16": torch.uint16, "float32": torch.float32}
_SCALES = {"uint8": float(FULL_SCALE[torch.uint8]), "uint16": float(FULL_SCALE[torch.uint16]), "float32": 1.0}
_CV_DEPTHS = {"uint8": cv2.CV_8U, "uint16": cv2.CV_16U}

# Channel permutations from RGB(A) to each backend's order, keyed by input channel count.
_ORDERS = {
    "bgr": {1: [0], 3: [2, 1, 0], 4: [2, 1, 0, 3]},
    "rgb": {1: [0], 3: [0, 1, 2], 4: [0, 1, 2, 3]},
}


def check_frames(
    frames: object, width: int | None, height: int | None, channels: tuple[int, ...]
) -> torch.Tensor:
    """Validate a batch: a Tensor [B,C,H,W] with C in `channels`, float or uint8, of size W x H (if given)."""
    if not isinstance(frames, torch.Tensor):
        raise ValueError(f"frames must be a torch.Tensor [B,C,H,W], got {type(frames).__name__}")
    if frames.dim() != 4:
        raise ValueError(f"frames must be a 4-D tensor [B,C,H,W], got shape {tuple(frames.shape)}")
    if frames.dtype != torch.uint8 and frames.dtype not in FLOAT_DTYPES:
        raise ValueError(f"frames must be float in [0, 1] or uint8 in [0, 255], got dtype {frames.dtype}")
    b, c, h, w = frames.shape
    if c not in channels:
        expected = " or ".join(str(n) for n in channels)
        raise ValueError(
            f"frames must have {expected} channels [B,C,H,W], got C={c} (shape {tuple(frames.shape)})"
        )
    if width is not None and (w, h) != (width, height):
        raise ValueError(
            f"frames must be {width}x{height} (W x H) as the writer was opened, got {w}x{h} "
            f"(shape {tuple(frames.shape)})"
        )
    return frames


def samples_for_bits(bits: int) -> Samples:
    """The sample type that carries `bits` per sample to an encoder: 8 uint8, 9-16 uint16, 32 float32."""
    return "uint8" if bits == 8 else "float32" if bits == 32 else "uint16"


def to_hwc(frames: torch.Tensor, order: str = "bgr", samples: Samples = "uint8") -> torch.Tensor:
    """[B,C,H,W] float in [0,1] or uint8 -> [B,H,W,C] `samples`, in the backend's channel `order`.

    Floats are clamped to [0, 1] with NaN -> 0, scaled to the sample range (uint8 255, uint16 65535,
    float32 1) and rounded to nearest for integer samples; uint8 frames become uint16 exactly (x257) and
    float32 as value / 255. Runs on the tensor's device; `order` is "bgr" or "rgb" (alpha last).
    """
    index = _ORDERS[order][frames.shape[1]]
    if frames.device.type == "cpu" and frames.dtype != torch.uint8:
        return _cpu_float_to_hwc(frames, index, samples)
    return _torch_to_hwc(frames, index, samples)


def _torch_scaled(frames: torch.Tensor, samples: Samples) -> torch.Tensor:
    """Frames [B,C,H,W] as `samples` (see `to_hwc`), torch ops on their device; never modifies `frames`."""
    if frames.dtype == torch.uint8:
        if samples == "uint8":
            return frames
        if samples == "uint16":
            return (
                frames.to(torch.int32)
                .mul_(FULL_SCALE[torch.uint16] // FULL_SCALE[torch.uint8])
                .to(torch.uint16)
            )
        return frames.to(torch.float32).div_(_SCALES["uint8"])
    scale = _SCALES[samples]
    scaled = frames.to(torch.float32).mul(scale)  # a new tensor: the caller's batch is never touched
    scaled = scaled.nan_to_num_(nan=0.0).clamp_(0.0, scale)
    return scaled if samples == "float32" else scaled.round_().to(_DTYPES[samples])


def _torch_to_hwc(frames: torch.Tensor, index: list[int], samples: Samples) -> torch.Tensor:
    """Torch ops on the tensor's device (the GPU path, uint8 input, and CPU frames holding inf or NaN)."""
    frames = _torch_scaled(frames, samples)
    # Stacking the planes in the backend's order is the cheapest CHW -> HWC copy (one pass, contiguous).
    return torch.stack([frames[:, c] for c in index], dim=-1)


def _cpu_float_to_hwc(frames: torch.Tensor, index: list[int], samples: Samples) -> torch.Tensor:
    """The CPU path: OpenCV per plane with small buffers (torch's batch-sized float temporaries cost page
    faults), faster than the torch path (bench/RESULTS.md). addWeighted's saturate_cast scales, rounds half to even and
    clamps to the integer range (float32 samples are clipped to [0, 1]); a frame with inf or NaN (where
    saturate_cast gives 0) takes the torch path.
    """
    batch, _, height, width = frames.shape
    out = np.empty((batch, height, width, len(index)), np.dtype(samples))
    for i in range(batch):
        frame = frames[i].to(torch.float32)
        planes = [np.ascontiguousarray(frame[c].numpy()) for c in index]
        # numpy's max (NaN propagates) finds inf/NaN in one fast single-threaded pass; torch's amax spins
        # OpenMP threads that fight the encoder threads for the cores.
        if not all(np.isfinite(plane.max()) for plane in planes):
            out[i] = _torch_to_hwc(frame[None], index, samples)[0].numpy()
            continue
        if samples == "float32":
            planes = [np.clip(plane, 0.0, 1.0) for plane in planes]
        else:
            scale, depth = _SCALES[samples], _CV_DEPTHS[samples]
            planes = [cv2.addWeighted(plane, scale, plane, 0.0, 0.0, dtype=depth) for plane in planes]
        if len(planes) == 1:
            out[i, ..., 0] = planes[0]
        else:
            cv2.merge(planes, dst=out[i])
    return torch.from_numpy(out)


@dataclass
class HostFrames:
    """A batch of samples [B,H,W,C] on its way to the host; `numpy()` waits for the copy to land."""

    tensor: torch.Tensor
    ready: torch.cuda.Event | None = None

    def numpy(self) -> np.ndarray:
        if self.ready is not None:
            self.ready.synchronize()
        return self.tensor.numpy()


def to_host(frames: torch.Tensor) -> HostFrames:
    """Start one copy of a batch of samples to host memory (pinned and non-blocking for CUDA tensors)."""
    if frames.device.type != "cuda":
        return HostFrames(frames.cpu())
    host = torch.empty(frames.shape, dtype=frames.dtype, pin_memory=True)
    host.copy_(frames, non_blocking=True)
    ready = torch.cuda.Event()
    ready.record()
    return HostFrames(host, ready)
