"""Validation videos under strategy="ddp" (2 gloo processes) from the user's own module and DataLoaders: rank
zero's video holds every rank's frames, in dataset order, each once."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
from conftest import read_video
from test_predict import ROOT, counter_level, levels

from lightning_matting.callbacks.step_frames import FrameRun
from lightning_matting.callbacks.validation_gather import SHARE_ONLY, ValidationGather

FRAMES = 13  # on 2 ranks: DistributedSampler repeats frame 0 to give each rank 7

# Lightning's "ddp" launches this file again for rank 1, so it is a script with a __main__ guard. Each case is
# one Trainer run; frame k of every dataset is a flat grey of counter_level(k).
DRIVER = """
import json, sys
import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset, TensorDataset
from lightning_matting.callbacks import VideoWriterCallback
from lightning_matting.data.sampling import VideoBatchSampler

out, frames = sys.argv[1], int(sys.argv[2])
levels = torch.tensor([20 + 10 * k for k in range(frames)], dtype=torch.uint8)
src = levels.view(-1, 1, 1, 1).expand(-1, 3, 48, 64).contiguous()  # [N,3,H,W] uint8
truth = (250 - levels).view(-1, 1, 1, 1).expand(-1, 1, 48, 64).contiguous()  # [N,1,H,W] uint8
dataset = TensorDataset(src, truth)


class RankShare(IterableDataset):
    # an iterable dataset that splits itself across ranks: rank r gives the frames k = r mod 2
    def __iter__(self):
        for k in range(torch.distributed.get_rank(), frames, 2):
            yield src[k], truth[k]


class Grey(L.LightningModule):
    # the user's own module: alpha is the grey of the source; logs the frames each rank validates
    def __init__(self, case, val_loader=None):
        super().__init__()
        self.case, self.val_loader, self.weight = case, val_loader, torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return self.weight.sum() * 0

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        if not self.trainer.sanity_checking:
            seen = [round((float(level) - 20) / 10) for level in batch[0][:, 0, 0, 0]]
            with open(out + "/seen.jsonl", "a") as log:
                log.write(json.dumps([self.case, self.global_rank, seen]) + "\\n")
        return batch[0].float().mean(1, keepdim=True) / 255

    def val_dataloader(self):
        return self.val_loader()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def trainer(case, **kwargs):
    settings = {key: kwargs.pop(key) for key in ("val_layout", "log_sanity_check", "val_batches", "val_videos") if key in kwargs}
    writer = VideoWriterCallback(f"{out}/{case}", outputs=["pha"], **settings)
    return L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", logger=False, callbacks=[writer], enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, **kwargs
    )


if __name__ == "__main__":
    loader = DataLoader(dataset, batch_size=2)
    trainer("validate").validate(Grey("validate"), loader)
    trainer("compare", val_layout="compare", log_sanity_check=True, max_epochs=1, limit_train_batches=1).fit(
        Grey("compare"), loader, loader
    )
    # VideoBatchSampler made in the hook: each rank a contiguous range (frames 0-5 and 6-12), in 3 and 4 batches
    ranges = Grey("ranges", lambda: DataLoader(dataset, batch_sampler=VideoBatchSampler([frames], batch_size=2)))
    trainer("ranges").validate(ranges)
    trainer("val_batches", val_batches=2).validate(Grey("val_batches"), loader)
    trainer("two_loaders", val_videos=2).validate(Grey("two_loaders"), [loader, DataLoader(dataset, batch_size=3)])
    wrapped = DataLoader(dataset, sampler=list(range(frames)), batch_size=2)  # a DistributedSamplerWrapper
    trainer("wrapped").validate(Grey("wrapped"), wrapped)
    iterable = DataLoader(RankShare(), batch_size=2)
    trainer("iterable", log_sanity_check=True, max_epochs=1, limit_train_batches=1).fit(
        Grey("iterable"), loader, iterable
    )
"""


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """The driver's cases, run once on 2 processes: (result, output folder, {(case, rank): frames seen})."""
    out = tmp_path_factory.mktemp("ddp_validation")
    driver = out / "driver.py"
    driver.write_text(DRIVER)
    result = subprocess.run(
        [sys.executable, str(driver), str(out), str(FRAMES)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    seen: dict[tuple[str, int], list[int]] = {}
    for line in (out / "seen.jsonl").read_text().splitlines():
        case, rank, frames = json.loads(line)
        seen.setdefault((case, rank), []).extend(frames)
    return result, out, seen


def video(out, case: str, folder: str = "epoch=0", name: str = "pha") -> np.ndarray:
    return read_video(out / case / "val" / "run_0" / folder / "val_0" / f"{name}.mp4")[0]


def numbers(frames: np.ndarray, truth: bool = False) -> list[int]:
    """The frame number each decoded frame encodes (H.264 moves the grey levels by a few)."""
    return [round(((250 - level if truth else level) - counter_level(0)) / 10) for level in levels(frames)]


def test_a_plain_dataloader_gives_rank_zero_every_frame_once_in_order(ddp_run):
    _, out, seen = ddp_run
    assert seen[("validate", 0)] == [0, 2, 4, 6, 8, 10, 12]  # DistributedSampler's shares, frame 0 repeated
    assert seen[("validate", 1)] == [1, 3, 5, 7, 9, 11, 0]
    assert numbers(video(out, "validate")) == list(range(FRAMES))


def test_compare_tiles_of_input_output_and_truth_come_from_every_rank(ddp_run):
    _, out, _ = ddp_run
    for folder, frames in (("sanity_check", range(8)), ("epoch=0", range(FRAMES))):  # sanity: 2 batches/rank
        tiles = video(out, "compare", folder, "compare")
        assert tiles.shape[1:] == (48, 3 * 64, 3)
        for tile in range(3):  # input | alpha | truth
            frame_tile = tiles[:, 8:40, tile * 64 + 8 : tile * 64 + 56]
            assert numbers(frame_tile, truth=tile == 2) == list(frames), (folder, tile)


def test_contiguous_ranges_in_uneven_batch_counts_are_joined_in_order(ddp_run):
    _, out, seen = ddp_run
    assert seen[("ranges", 0)] == list(range(6)) and seen[("ranges", 1)] == list(range(6, FRAMES))
    assert numbers(video(out, "ranges")) == list(range(FRAMES))


def test_val_batches_takes_that_many_batches_of_every_rank(ddp_run):
    _, out, _ = ddp_run
    assert numbers(video(out, "val_batches")) == list(range(8))


def test_each_dataloader_its_video(ddp_run):
    _, out, _ = ddp_run
    for name in ("val_0", "val_1"):  # batches of 2 frames and of 3
        frames = read_video(out / "two_loaders" / "val" / "run_0" / "epoch=0" / name / "pha.mp4")[0]
        assert numbers(frames) == list(range(FRAMES))


def test_an_iterable_dataset_writes_rank_zeros_share_and_says_so_once(ddp_run):
    result, out, seen = ddp_run
    assert seen[("iterable", 1)] == [1, 3, 5, 7, 9, 11]
    assert numbers(video(out, "iterable")) == list(range(0, FRAMES, 2))
    assert numbers(video(out, "iterable", "sanity_check")) == [0, 2, 4, 6]
    assert result.stderr.count(SHARE_ONLY) == 1  # three validations, one warning


def test_a_sampler_of_ones_own_writes_rank_zeros_share(ddp_run):
    _, out, seen = ddp_run
    assert seen[("wrapped", 1)] == [1, 3, 5, 7, 9, 11, 0]
    assert numbers(video(out, "wrapped")) == list(range(0, FRAMES, 2))


def test_frames_that_are_not_a_whole_number_per_sample_are_refused():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        gather = ValidationGather([[(0, [4, 5]), (0, [6, 7])]], val_videos=1)
        two = FrameRun(None, {"pha": torch.full((2, 1, 8, 8), 0.5)}, None)
        assert [
            (run.video, run.frames["pha"].dtype, len(run.frames["pha"])) for run in gather.runs([two], 0, 0)
        ] == [("val_0", torch.uint8, 2)]
        three = FrameRun(None, {"pha": torch.zeros(3, 1, 8, 8)}, None)
        with pytest.raises(ValueError) as error:
            gather.runs([three], 1, 0)
        assert str(error.value) == (
            "VideoWriterCallback: a distributed validation orders each sample's frames by its dataset index: the "
            "step returned 3 frames for the 2 samples of batch 1; return T frames per sample ([B,C,H,W] or "
            "[B,T,C,H,W])"
        )
    finally:
        dist.destroy_process_group()
