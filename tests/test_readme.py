"""The README's and the docs' examples run as written (every ```python block), with the inputs they name made
by the test: a clip and a plate, official weights from a mirror folder, a reader's own module and loaders."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import cv2
import lightning as L
import numpy as np
import pytest
import torch
from conftest import read_video
from test_predict import write_counter_clip
from torch.utils.data import DataLoader, TensorDataset

from lightning_matting.models import build_model

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = [
    pytest.param(match.group(1), id=f"{page.name}:{k}")
    for page in PAGES
    for k, match in enumerate(re.finditer(r"```python\n(.*?)```", page.read_text(), re.S))
]


def readme_block(heading: str) -> str:
    """The first ```python block after `heading` in the README."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(heading) :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_your_own_model_example(tmp_path, monkeypatch):
    code = readme_block("## Quickstart: your own model")
    assert len(code.splitlines()) <= 25
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    frames, fps, width, height = read_video(tmp_path / "out" / "predict_0" / "pha.mp4")
    assert (len(frames), fps, width, height) == (16, 25, 96, 64)
    compare = read_video(tmp_path / "out" / "val" / "run_0" / "epoch=0" / "val_0" / "compare.mp4")
    assert (len(compare[0]), compare[2], compare[3]) == (16, 3 * 96, 64)


class MyMatting(L.LightningModule):
    """A reader's own module, as the docs' examples assume one."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 1, 3, padding=1), torch.nn.Sigmoid())

    def training_step(self, batch, i):
        return torch.nn.functional.l1_loss(self.net(batch[0]), batch[1])

    def validation_step(self, batch, i):
        return {"pha": self.net(batch[0])}

    predict_step = validation_step

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> Path:
    """A mirror folder holding the official files the examples load (untrained weights of the right shapes)."""
    folder = tmp_path_factory.mktemp("mirror")
    torch.manual_seed(0)
    for variant, name in (
        ("rvm-mobilenetv3", "rvm_mobilenetv3.pth"),
        ("mattingrefine-resnet50", "pytorch_resnet50.pth"),
    ):
        torch.save({k: v.half() for k, v in build_model(variant).state_dict().items()}, folder / name)
    return folder


@pytest.mark.parametrize("code", BLOCKS)
def test_every_python_block_of_the_readme_and_docs_runs(code, tmp_path, monkeypatch, mirror):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("LIGHTNING_MATTING_MIRROR", str(mirror))
    monkeypatch.setattr(sys, "argv", ["example", "--help"])
    write_counter_clip(tmp_path / "interview.mp4", 4)
    cv2.imwrite(str(tmp_path / "plate.png"), np.zeros((48, 64, 3), np.uint8))
    (tmp_path / "rvm_mobilenetv3.pth").write_bytes((mirror / "rvm_mobilenetv3.pth").read_bytes())
    frames = TensorDataset(torch.rand(8, 3, 48, 64), torch.rand(8, 1, 48, 64))
    names = {
        "__name__": "example",
        "L": L,
        "batches": [torch.rand(2, 1, 720, 1280)],
        "rgba": torch.rand(2, 4, 720, 1280),
        "MyMatting": MyMatting,
        "MyModule": MyMatting,
        "MyData": None,
        "train_loader": DataLoader(frames, batch_size=4),
        "val_loader": DataLoader(frames, batch_size=4),
    }
    try:
        exec(compile(code, "example", "exec"), names)
    except SystemExit as stop:  # a LightningCLI example, given --help
        assert stop.code in (0, None)
