"""Frames travel as uint8 from the DataLoader, become floats on the device: same outputs as float batches."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from lightning_matting.data import MattingBatch, VideoMattingDataModule
from lightning_matting.data.readers import frame_to_float
from lightning_matting.module import MattingModule
from lightning_matting.writers import VideoWriter

WIDTH, HEIGHT = 64, 48
FRAME_KEYS = ("src", "bgr", "tgt")


class MeanMatte(nn.Module):
    """pha = mean of src, fgr = src; records the dtype and range of every src it is given."""

    def __init__(self):
        super().__init__()
        self.seen: list[tuple[torch.dtype, float, float]] = []

    def forward(self, src, bgr):
        self.seen.append((src.dtype, float(src.min()), float(src.max())))
        return src.mean(1, keepdim=True) * 0.5 + bgr.mean(1, keepdim=True) * 0.5, src


def random_frames(count: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 3, HEIGHT, WIDTH), dtype=torch.uint8, generator=generator)


def write_video(path: Path, frames: torch.Tensor) -> str:
    with VideoWriter(path, 25, WIDTH, HEIGHT, fourcc="FFV1") as writer:
        writer.add_batch(frames)
    return str(path)


@pytest.fixture
def source(tmp_path):
    return write_video(tmp_path / "source.mkv", random_frames(5, seed=0))


def uint8_batches(source: str, background: str, target: str | None) -> list[MattingBatch]:
    datamodule = VideoMattingDataModule(
        sources=[source], backgrounds=[background], target=target, batch_size=2
    )
    datamodule.setup("predict")
    return list(datamodule.predict_dataloader())


def as_float(batch: MattingBatch) -> MattingBatch:
    """The batch as the float data path made it: frames float32 in [0, 1] (uint8 / 255)."""
    frames = {key: getattr(batch, key) for key in FRAME_KEYS if getattr(batch, key) is not None}
    return dataclasses.replace(batch, **{key: frame_to_float(value) for key, value in frames.items()})


def predict(batches: list[dict]) -> tuple[list[dict], MeanMatte]:
    net = MeanMatte()
    module = MattingModule(net, outputs=["pha", "fgr", "com"])
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    loader = DataLoader(batches, batch_size=None)  # the batches as they are
    return trainer.predict(module, dataloaders=loader, return_predictions=True), net


@pytest.mark.parametrize("plate_kind", ["image", "video"])
def test_uint8_batches_predict_the_same_as_float_batches(tmp_path, source, plate_kind):
    if plate_kind == "image":
        background, target = str(tmp_path / "plate.png"), "#ff8000"
        cv2.imwrite(background, random_frames(1, seed=1)[0].permute(1, 2, 0).numpy())
    else:
        background, target = write_video(tmp_path / "plate.mkv", random_frames(5, seed=2)), None
    batches = uint8_batches(source, background, target)
    frames = [getattr(batch, key) for batch in batches for key in FRAME_KEYS]
    assert all(value.dtype == torch.uint8 for value in frames if value is not None)
    assert bool(batches[0].static) == (plate_kind == "image")

    from_uint8, net = predict(batches)
    from_float, _ = predict([as_float(batch) for batch in batches])

    assert all(dtype == torch.float32 and low >= 0 and high <= 1 for dtype, low, high in net.seen)
    assert max(high for _, _, high in net.seen) > 0.9  # 0-255 scaled to [0, 1], not left at 0-255
    assert len(from_uint8) == len(from_float) == 3
    for ours, reference in zip(from_uint8, from_float, strict=True):
        assert ours["index"].tolist() == reference["index"].tolist()
        for name in ("pha", "fgr", "com"):
            assert ours[name].dtype == torch.float32
            assert torch.equal(ours[name], reference[name]), name
