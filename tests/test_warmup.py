"""Warm-up: a recurrent run that starts mid-video first predicts, without writing, the frames before it."""

from __future__ import annotations

import warnings
from fractions import Fraction

import lightning as L
import numpy as np
import pytest
import torch
from conftest import read_video
from test_models_rvm import manifest, recipe

from lightning_matting.callbacks import VideoWriterCallback
from lightning_matting.data import VideoMattingDataModule, make_clip
from lightning_matting.data.batch import MattingBatch
from lightning_matting.data.sampling import VideoBatchSampler, collate_frames, frame_ranges
from lightning_matting.models import RobustVideoMatting
from lightning_matting.module import MattingModule
from lightning_matting.writers import VideoWriter

SIZE, FRAMES, FPS = (64, 48), 20, 10
SEGMENT_SECONDS = 0.4  # 4 frames per segment


def test_a_share_that_starts_mid_video_is_preceded_by_its_warmup_batches():
    sampler = VideoBatchSampler([10, 6], batch_size=4, ranges=[[range(7, 10)], [range(6)]], warmup=5)
    # video 0 from frame 7: warm-up frames 2-6 in batches of their own, then 7-9; video 1 (offset 10) whole
    assert list(sampler) == [[2, 3, 4, 5], [6], [7, 8, 9], [10, 11, 12, 13], [14, 15]]
    assert len(sampler) == 5 and sampler.written == [[range(7, 10)], [range(6)]]
    ranks = [VideoBatchSampler([9], batch_size=2, ranges=frame_ranges([9], 2)[r], warmup=20) for r in (0, 1)]
    assert list(ranks[0]) == [[0, 1], [2, 3]]  # no warm-up before frame 0
    assert list(ranks[1]) == [[0, 1], [2, 3], [4, 5], [6, 7], [8]]  # clipped at frame 0: warm-up 0-3
    assert [r.written for r in ranks] == [[[range(0, 4)]], [[range(4, 9)]]]
    with pytest.raises(
        ValueError, match=r"invalid warmup \(frames before a range's start\) \(-1\): expected an int >= 0"
    ):
        VideoBatchSampler([9], batch_size=2, warmup=-1)


def test_a_later_range_of_a_video_warms_up_from_the_end_of_the_earlier_one_when_nearer():
    near = VideoBatchSampler([20], batch_size=4, ranges=[[range(0, 4), range(7, 9)]], warmup=5)
    assert list(near) == [[0, 1, 2, 3], [4, 5, 6], [7, 8]]  # the state carries on through frames 4-6
    far = VideoBatchSampler([20], batch_size=4, ranges=[[range(0, 2), range(15, 17)]], warmup=3)
    assert list(far) == [[0, 1], [12, 13, 14], [15, 16]]  # a fresh warm-up of 3 frames


def test_collate_marks_the_frames_outside_the_ranges_written():
    items = [{"src": torch.zeros(3, 2, 2), "index": i, "video": "a"} for i in (3, 4, 5)]
    assert collate_frames(items, written={"a": [range(5, 9)]}).warmup.tolist() == [True, True, False]
    assert collate_frames(items, written={"a": [range(0, 4), range(5, 6)]}).warmup.tolist() == [
        False,
        True,
        False,
    ]
    assert collate_frames(items, written={"a": [range(3, 9)]}).warmup is None
    assert collate_frames(items).warmup is None


def test_collate_makes_floats_of_uint8_frames_on_request():
    plate = torch.full((3, 2, 2), 51, dtype=torch.uint8)
    items = [
        {"src": torch.full((3, 2, 2), 255, dtype=torch.uint8), "bgr": plate, "index": i, "video": "a"}
        for i in (0, 1)
    ]
    batch = collate_frames(items, to_float=True)
    assert batch.src.dtype == batch.bgr.dtype == torch.float32
    assert batch.src.eq(1).all() and batch.bgr.sub(0.2).abs().max() < 1e-7
    assert batch.bgr.shape == (1, 3, 2, 2) and collate_frames(items).src.dtype == torch.uint8


def test_warmup_frames_are_predicted_but_not_returned():
    module = MattingModule(reference_rvm(), downsample_ratio=1, outputs=["pha"], warmup_frames=2)
    src = torch.rand(3, 3, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a deliberate warm-up start does not warn about a lost state
        out = module.predict_step(
            MattingBatch(src, ["v"] * 3, torch.tensor([4, 5, 6]), warmup=torch.tensor([1, 1, 0]).bool())
        )
    assert out["pha"].shape == (1, 1, 16, 16) and out["index"].tolist() == [6]
    with pytest.raises(ValueError, match=r"warm-up frames must precede the frames to write"):
        module.predict_step(
            MattingBatch(src, ["v"] * 3, torch.tensor([7, 8, 9]), warmup=torch.tensor([0, 1, 0]).bool())
        )
    with pytest.raises(ValueError, match=r"invalid warmup_frames \(-3\): expected an int >= 0"):
        MattingModule(reference_rvm(), warmup_frames=-3)
    assert MattingModule(reference_rvm(), warmup_frames=7).predict_warmup_frames == 7
    assert MattingModule("mattingbase-mobilenetv2", warmup_frames=7).predict_warmup_frames == 0  # no state


def reference_rvm() -> RobustVideoMatting:
    model = RobustVideoMatting("mobilenetv3")
    model.load_state_dict(recipe.reference_weights(manifest("mobilenetv3")))
    return model.eval()


def loop_alpha(model: RobustVideoMatting, src: torch.Tensor, start: int) -> np.ndarray:
    """uint8 alpha [N-start,H,W] of frames start.. with a fresh state at `start`, frame after frame, on 2
    threads as `predict` runs the module here: at 1 thread torch picks other kernels for 1x1 convolutions by
    batch size (3 frames there, 1 here), which moved a pixel by one 8-bit level."""
    state: list = [None] * 4
    out = []
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.no_grad():
            for frame in src[start:]:
                _, pha, *state = model(frame[None], *state, downsample_ratio=1)
                out.append(pha[0, 0])
    finally:
        torch.set_num_threads(threads)
    return torch.stack(out).mul(255).round().to(torch.uint8).numpy()


class StopAt(L.Callback):
    """Records the batches predicted; fails the run (as a crash would) at the batch holding frame `frame`."""

    def __init__(self, frame: int | None = None):
        self.frame = frame
        self.seen: list[tuple[list[int], list[bool]]] = []

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if self.frame in batch.index.tolist():
            raise RuntimeError("stopped on purpose")
        warmup = torch.zeros(len(batch), dtype=torch.bool) if batch.warmup is None else batch.warmup
        self.seen.append((batch.index.tolist(), warmup.tolist()))


def predict(source, out, warmup: int, stop_at: int | None = None, resume=False) -> StopAt:
    spy = StopAt(stop_at)
    writer = VideoWriterCallback(
        out, outputs=["pha"], fourcc="FFV1", segment_seconds=SEGMENT_SECONDS, resume=resume
    )
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, callbacks=[writer, spy])
    # eager: the written alpha is compared bit for bit with an eager loop (the fast copy's rounding differs
    # by up to 1e-5, which can move a pixel across an 8-bit step; tests/test_inference.py bounds it)
    module = MattingModule(
        reference_rvm(), downsample_ratio=1, warmup_frames=warmup, inference="eager", threads=2
    )
    dm = VideoMattingDataModule(sources=[str(source)], batch_size=3)
    trainer.predict(module, datamodule=dm, return_predictions=False)
    return spy


def test_a_resumed_recurrent_run_warms_up_before_the_first_missing_frame(tmp_path):
    clip = make_clip(*SIZE, FRAMES, fps=FPS, seed=3)
    source = tmp_path / "clip.mkv"
    with VideoWriter(source, FPS, *SIZE, fourcc="FFV1") as writer:
        writer.add_batch(clip.src)
    with pytest.raises(RuntimeError, match="stopped on purpose"):  # after 9 frames: chunks 0-3, 4-7, 8 kept
        predict(source, tmp_path / "out", warmup=5, stop_at=10)

    spy = predict(source, tmp_path / "out", warmup=5, resume=True)
    assert spy.seen == [([4, 5, 6], [True] * 3), ([7, 8], [True] * 2)] + [
        (list(range(first, min(first + 3, FRAMES))), [False] * min(3, FRAMES - first))
        for first in range(9, FRAMES, 3)
    ]
    written, fps, _, _ = read_video(tmp_path / "out" / "clip" / "pha.mkv")
    assert len(written) == FRAMES and fps == Fraction(FPS)
    src = torch.from_numpy(read_video(source)[0]).permute(0, 3, 1, 2).float().div(255)
    model = reference_rvm()
    single = loop_alpha(model, src, 0)
    np.testing.assert_array_equal(written[:9, ..., 0], single[:9])  # written before the interruption
    np.testing.assert_array_equal(written[9:, ..., 0], loop_alpha(model, src, 4)[5:])  # warm-up from frame 4
    assert np.abs(written[9:, ..., 0].astype(int) - single[9:]).mean() < 2  # close to the uninterrupted run
