"""MattingBatch: fields checked when made, frames moved with a static plate kept, pinned by the DataLoader."""

from __future__ import annotations

import re

import pytest
import torch
from torch.utils.data import DataLoader

from lightning_matting.data import MattingBatch, collate_frames
from lightning_matting.data.batch import LiveFrameInfo


def frames(count: int = 2, channels: int = 3, dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    return torch.zeros(count, channels, 8, 12, dtype=dtype)


def batch(**fields) -> MattingBatch:
    return MattingBatch(**({"src": frames(), "video": ["a", "a"], "index": torch.arange(2)} | fields))


def test_a_batch_holds_its_frames_and_bookkeeping():
    made = batch(
        bgr=frames(1), tgt=frames(), pha=frames(channels=1), static=("bgr",), aligned=torch.ones(2).bool()
    )
    assert len(made) == 2 and made.bgr.shape == (1, 3, 8, 12) and made.warmup is None and made.live is None
    clip = MattingBatch(
        torch.rand(2, 5, 3, 8, 12), ["a", "b"], torch.arange(2), pha=torch.rand(2, 5, 1, 8, 12)
    )
    assert clip.src.shape[1] == 5


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"src": torch.zeros(2, 4, 8, 12)}, "MattingBatch.src must be a tensor [B,3,H,W] or [B,T,3,H,W], got a tensor [2, 4, 8, 12] torch.float32"),
        ({"src": frames(dtype=torch.int32)}, "MattingBatch.src must hold uint8 (0-255), uint16 (0-65535) or float frames in [0, 1], got torch.int32"),
        ({"video": "a"}, "MattingBatch.video must be a list of 2 video names (one str per sample), got 'a'"),
        ({"index": torch.arange(2).int()}, "MattingBatch.index must be a tensor int64 [B] (B = 2), got a tensor [2] torch.int32"),
        ({"index": [0, 1]}, "MattingBatch.index must be a tensor int64 [B] (B = 2), got [0, 1]"),
        ({"warmup": torch.zeros(3).bool()}, "MattingBatch.warmup must be a tensor bool [B] (B = 2), got a tensor [3] torch.bool"),
        ({"aligned": torch.zeros(2)}, "MattingBatch.aligned must be a tensor bool [B] (B = 2), got a tensor [2] torch.float32"),
        ({"bgr": frames(1)}, "MattingBatch.bgr must be a tensor [2,3,8,12] (src's samples, frames and size; C = 3), got a tensor [1, 3, 8, 12] torch.uint8"),
        ({"tgt": frames(), "static": ("tgt",)}, "MattingBatch.tgt must be a tensor [1,3,8,12] (src's samples, frames and size; C = 3), got a tensor [2, 3, 8, 12] torch.uint8"),
        ({"pha": frames()}, "MattingBatch.pha must be a tensor [2,1,8,12] (src's samples, frames and size; C = 1), got a tensor [2, 3, 8, 12] torch.uint8"),
        ({"fgr": frames(dtype=torch.bool)}, "MattingBatch.fgr must hold uint8 (0-255), uint16 (0-65535) or float frames in [0, 1], got torch.bool"),
        ({"static": ["bgr"]}, "MattingBatch.static must be a tuple of 'bgr', 'tgt', got ['bgr']"),
        ({"static": ("bgr",)}, "MattingBatch.static lists 'bgr', which is None"),
        ({"live": LiveFrameInfo(torch.arange(3), torch.zeros(2), torch.zeros(2), 0)}, "MattingBatch.live must be a LiveFrameInfo with frame, capture_time and pts of 2 values, got LiveFrameInfo("),
    ],
)  # fmt: skip
def test_a_bad_field_is_refused_naming_it_and_its_form(fields, message):
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        batch(**fields)


def test_to_keeps_a_static_plate_per_video_and_the_bookkeeping_on_the_host():
    kept: dict = {}
    first, second = batch(bgr=frames(1), static=("bgr",)), batch(bgr=frames(1), static=("bgr",))
    other = batch(video=["b", "b"], bgr=frames(1), static=("bgr",))
    moved = [item.to("meta", kept=kept) for item in (first, second, other)]
    assert all(item.src.device.type == "meta" and item.index.device.type == "cpu" for item in moved)
    assert moved[1].bgr is moved[0].bgr  # crossed once for video "a"
    assert moved[2].bgr is not moved[0].bgr and kept["bgr"] == ("b", moved[2].bgr)
    assert first.to("meta").bgr is not moved[0].bgr  # without `kept`, every batch crosses
    assert first.src.device.type == "cpu"  # the batch itself is left as it is


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs an accelerator")
def test_a_pinning_dataloader_pins_the_frames():
    items = [{"src": frames(1)[0], "index": k, "video": "a"} for k in range(2)]
    loaded = next(iter(DataLoader(items, batch_size=2, collate_fn=collate_frames, pin_memory=True)))
    assert isinstance(loaded, MattingBatch) and loaded.src.is_pinned()


def test_pin_memory_is_what_the_dataloader_calls():
    from torch.utils.data._utils.pin_memory import pin_memory

    made = batch(bgr=frames(1), static=("bgr",))
    calls = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.Tensor, "pin_memory", lambda tensor, *a: calls.append(tensor.shape) or tensor)
        pinned = pin_memory(made)
    assert isinstance(pinned, MattingBatch) and calls == [(2, 3, 8, 12), (1, 3, 8, 12)]
