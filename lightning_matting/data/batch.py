"""MattingBatch: the frames of one batch with their bookkeeping, as the datamodule's loaders give them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

StaticField = Literal["bgr", "tgt"]
FRAME_DTYPES = (torch.uint8, torch.uint16, torch.float16, torch.bfloat16, torch.float32, torch.float64)
_FRAME_FIELDS = ("src", "bgr", "tgt", "pha", "fgr")  # image fields: they cross to the device
_CHANNELS = {"src": 3, "bgr": 3, "tgt": 3, "pha": 1, "fgr": 3}


@dataclass(frozen=True)
class LiveFrameInfo:
    """What a live source tells of each frame of a batch (`lightning_matting.data.live`).

    Attributes:
        frame: int64 [B], each frame's number among those decoded (gaps are frames left out, realtime).
        capture_time: float64 [B], wall clock when decoded, s since the epoch.
        pts: float64 [B], the stream's presentation time, s; NaN where it has none.
        dropped: Frames left out so far (realtime), >= 0.
    """

    frame: Tensor
    capture_time: Tensor
    pts: Tensor
    dropped: int


@dataclass(frozen=True)
class MattingBatch:
    """The frames of a batch and their bookkeeping, checked when made.

    Frames (`src`, `bgr`, `tgt`, `pha`, `fgr`) are RGB (`pha` grey) [B,C,H,W], or clips [B,T,C,H,W] (training
    items of `clip_length` frames): uint8 in [0, 255] or uint16 in [0, 65535] as decoded, or floats in [0, 1]
    (ranges are not checked: that would read the pixels). `MattingModule` makes them floats on the device.

    Attributes:
        src: The frames to matte, [B,3,H,W] or [B,T,3,H,W].
        video: The video of each sample, B names (predict and validation batches hold one video).
        index: int64 [B], each sample's frame in its video (a clip's first frame).
        bgr: The background plate, like `src`; [1,3,H,W] when it is static (one image for the whole batch).
            None: the data gives no plate.
        tgt: The composite's target, like `bgr`; None: `target_color`.
        pha: Ground-truth alpha [B,1,H,W] or [B,T,1,H,W] (validation and training); None: none.
        fgr: Ground-truth foreground, like `src` (training); None: none.
        static: The fields of `bgr`, `tgt` that are one image for the batch ([1,...]): `to` keeps them on the
            device once per video.
        warmup: bool [B], True for frames predicted only to build a recurrent state (not written); they come
            first. None: every frame is written.
        aligned: bool [B], with `align`: False where the plate could not be aligned (the plate as it is).
        live: A live source's frame information; None for files.

    Raises:
        ValueError: A field of another type, shape or dtype, naming the field and the expected form.
    """

    src: Tensor
    video: list[str]
    index: Tensor
    bgr: Tensor | None = None
    tgt: Tensor | None = None
    pha: Tensor | None = None
    fgr: Tensor | None = None
    static: tuple[StaticField, ...] = ()
    warmup: Tensor | None = None
    aligned: Tensor | None = None
    live: LiveFrameInfo | None = None

    def __post_init__(self) -> None:
        src = self.src
        if not isinstance(src, Tensor) or src.dim() not in (4, 5) or src.shape[-3] != 3:
            _refuse("src", "[B,3,H,W] or [B,T,3,H,W]", src)
        _check_dtype("src", src)
        count = len(src)
        names = self.video
        if not isinstance(names, list) or len(names) != count or not all(isinstance(n, str) for n in names):
            raise ValueError(
                f"MattingBatch.video must be a list of {count} video names (one str per sample), got {names!r}"
            )
        for field in ("index", "warmup", "aligned"):
            dtype = torch.int64 if field == "index" else torch.bool
            value = getattr(self, field)
            if (value is not None or field == "index") and (
                not isinstance(value, Tensor) or value.shape != (count,) or value.dtype != dtype
            ):
                _refuse(field, f"{str(dtype).removeprefix('torch.')} [B] (B = {count})", value)
        if not isinstance(self.static, tuple) or not set(self.static) <= {"bgr", "tgt"}:
            raise ValueError(f"MattingBatch.static must be a tuple of 'bgr', 'tgt', got {self.static!r}")
        for field in ("bgr", "tgt", "pha", "fgr"):
            value = getattr(self, field)
            if value is None:
                if field in self.static:
                    raise ValueError(f"MattingBatch.static lists {field!r}, which is None")
                continue
            first = 1 if field in self.static else count
            expected = (first, *src.shape[1:-3], _CHANNELS[field], *src.shape[-2:])
            if not isinstance(value, Tensor) or value.shape != expected:
                form = ",".join(map(str, expected))
                _refuse(field, f"[{form}] (src's samples, frames and size; C = {_CHANNELS[field]})", value)
            _check_dtype(field, value)
        if self.live is not None and (
            not isinstance(self.live, LiveFrameInfo)
            or any(getattr(self.live, field).shape != (count,) for field in ("frame", "capture_time", "pts"))
        ):
            raise ValueError(
                f"MattingBatch.live must be a LiveFrameInfo with frame, capture_time and pts of {count} values, "
                f"got {self.live!r}"
            )

    def __len__(self) -> int:
        """The samples B."""
        return len(self.src)

    def to(
        self, device: torch.device | str, kept: dict[str, tuple[str, Tensor]] | None = None
    ) -> MattingBatch:
        """This batch with its frames on `device`; `index`, `warmup`, `aligned` and `live` stay on the host (read
        every batch: reading them on a GPU would synchronize).

        Args:
            device: Where the frames go.
            kept: {field: (video, tensor on a device)} of static fields, updated here: a static plate or target
                of the same video already on `device` is used as it is, so it crosses once per video.

        Returns:
            A new MattingBatch (frames in their dtype: uint8 stays uint8).
        """
        device = torch.device(device)
        non_blocking = device.type == "cuda"  # from pinned memory; elsewhere a plain copy
        moved = {}
        for field in _FRAME_FIELDS:
            value = getattr(self, field)
            if value is None:
                continue
            if kept is not None and field in self.static:
                video, tensor = kept.get(field, (None, None))
                if video != self.video[0] or tensor.device != device:
                    kept[field] = (self.video[0], value.to(device, non_blocking=non_blocking))
                moved[field] = kept[field][1]
            else:
                moved[field] = value.to(device, non_blocking=non_blocking)
        return dataclasses.replace(self, **moved)

    def pin_memory(self) -> MattingBatch:
        """This batch with its frames in pinned memory (DataLoader(pin_memory=True) calls this)."""
        pinned = {
            field: getattr(self, field).pin_memory()
            for field in _FRAME_FIELDS
            if getattr(self, field) is not None
        }
        return dataclasses.replace(self, **pinned)


def _check_dtype(field: str, value: Tensor) -> None:
    if value.dtype not in FRAME_DTYPES:
        raise ValueError(
            f"MattingBatch.{field} must hold uint8 (0-255), uint16 (0-65535) or float frames in [0, 1], got "
            f"{value.dtype}"
        )


def _refuse(field: str, form: str, value: object) -> None:
    got = f"a tensor {list(value.shape)} {value.dtype}" if isinstance(value, Tensor) else repr(value)
    raise ValueError(f"MattingBatch.{field} must be a tensor {form}, got {got}")
