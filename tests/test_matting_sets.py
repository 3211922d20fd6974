"""Real dataset layouts (VideoMatte240K, image mattes, evaluation clips) made by the tests from make_clip."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import cv2
import lightning as L
import numpy as np
import pytest
import torch
from conftest import read_video
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

from lightning_matting.callbacks import VideoWriterCallback
from lightning_matting.data import VideoMattingDataModule, make_clip
from lightning_matting.data.matting_sets import (
    EvaluationClips,
    ImageMattingDataset,
    VideoMatteDataset,
    alpha_uint8,
)
from lightning_matting.data.settings import SyntheticSettings, TrainingDataSettings
from lightning_matting.module import MattingModule
from lightning_matting.settings import TrainingSettings
from lightning_matting.writers import VideoWriter

SIZE = (64, 48)
DEMO_WEIGHTS = (
    Path(__file__).resolve().parents[1] / "lightning_matting" / "assets" / "demo_mattingbase_mobilenetv2.pth"
)


def uint8(frames: torch.Tensor) -> np.ndarray:
    """[T,C,H,W] float in [0,1] -> uint8 [T,H,W,C] RGB."""
    return frames.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def write_frames(folder: Path, frames: torch.Tensor) -> None:
    folder.mkdir(parents=True)
    for i, frame in enumerate(uint8(frames)):
        cv2.imwrite(
            str(folder / f"{i:05d}.png"),
            cv2.cvtColor(frame, cv2.COLOR_RGB2BGR) if frame.shape[-1] == 3 else frame,
        )


def write_video(path: Path, frames: torch.Tensor) -> None:
    with VideoWriter(path, 30, SIZE[0], SIZE[1], fourcc="FFV1") as writer:
        writer.add_batch(frames)


def videomatte(root: Path, frames: int = 6) -> Path:
    """fgr/pha as frame folders (clip a) and as lossless videos (clip b)."""
    for k, name in enumerate("ab"):
        clip = make_clip(*SIZE, frames, seed=k)
        if name == "a":
            write_frames(root / "fgr" / name, clip.fgr)
            write_frames(root / "pha" / name, clip.pha)
        else:
            (root / "fgr").mkdir(exist_ok=True)
            write_video(root / "fgr" / f"{name}.mkv", clip.fgr)
            write_video(root / "pha" / f"{name}.mkv", clip.pha.expand(-1, 3, -1, -1))
    return root


def backgrounds(root: Path) -> Path:
    root.mkdir(parents=True)
    for k in range(2):
        cv2.imwrite(str(root / f"still{k}.png"), np.full((SIZE[1], SIZE[0], 3), 40 + 100 * k, np.uint8))
    write_video(root / "moving.mkv", make_clip(*SIZE, 6, seed=9).src)
    return root


def evaluation(root: Path, frames: int = 4) -> Path:
    for k in range(2):
        clip = make_clip(*SIZE, frames, seed=20 + k, camera_shake=False, lighting_change=False)
        (root / "src").mkdir(parents=True, exist_ok=True)
        write_video(root / "src" / f"clip{k}.mkv", clip.src)
        write_frames(root / "pha" / f"clip{k}", clip.pha)
        (root / "bgr").mkdir(exist_ok=True)
        cv2.imwrite(
            str(root / "bgr" / f"clip{k}.png"), cv2.cvtColor(uint8(clip.bgr[None])[0], cv2.COLOR_RGB2BGR)
        )
    return root


@pytest.fixture
def data(tmp_path) -> tuple[Path, Path]:
    return videomatte(tmp_path / "videomatte"), backgrounds(tmp_path / "backgrounds")


def test_videomatte_items_have_the_keys_shapes_and_an_exact_composite(data):
    root, bgr = data
    dataset = VideoMatteDataset(root, bgr, clip_length=3, augment=False)
    assert len(dataset) == 4 and dataset.windows == [("a", 0), ("a", 3), ("b", 0), ("b", 3)]
    for index in range(len(dataset)):
        item = dataset[index]
        assert {k: tuple(item[k].shape) for k in ("src", "bgr", "fgr", "pha")} == {
            "src": (3, 3, 48, 64),
            "bgr": (3, 3, 48, 64),
            "fgr": (3, 3, 48, 64),
            "pha": (3, 1, 48, 64),
        }
        assert all(item[k].dtype == torch.uint8 for k in ("src", "bgr", "fgr", "pha"))
        f, p, b = (item[k].float() / 255 for k in ("fgr", "pha", "bgr"))
        # composited in float before rounding: within one level of the rounded layers' composite
        assert (item["src"].float() - (f * p + b * (1 - p)) * 255).abs().max() <= 1.5
    frames = VideoMatteDataset(root, bgr, clip_length=1, augment=False)[0]
    assert frames["src"].shape == (3, 48, 64) and frames["video"] == "a" and frames["index"] == 0


def test_augmentation_drifts_smoothly_over_a_window(tmp_path, data):
    root, _ = data
    still = tmp_path / "still"  # one flat grey background: the plate's level is its brightness jitter
    still.mkdir()
    cv2.imwrite(str(still / "grey.png"), np.full((SIZE[1], SIZE[0], 3), 120, np.uint8))
    torch.manual_seed(0)
    dataset = VideoMatteDataset(root, still, clip_length=3, augment=True)
    levels = [dataset[index]["bgr"].float().mean(dim=(1, 2, 3)) for index in range(len(dataset))]
    for level in levels:  # eased from the first frame's draw to the last's: the middle frame halfway
        assert abs(level[1] - (level[0] + level[2]) / 2) <= 1.0
    assert any(abs(level[2] - level[0]) > 3 for level in levels)  # and it does drift


def test_windows_are_read_at_random_speeds(tmp_path, data):
    _, bgr = data
    root = tmp_path / "counted"  # alpha frame i is a flat 20 + 30 i: an item's alpha names the frames read
    write_frames(root / "fgr" / "c", torch.rand(6, 3, SIZE[1], SIZE[0]))
    write_frames(
        root / "pha" / "c",
        torch.stack([torch.full((1, SIZE[1], SIZE[0]), (20 + 30 * i) / 255) for i in range(6)]),
    )
    dataset = VideoMatteDataset(root, bgr, clip_length=3, augment=True)
    torch.manual_seed(0)
    reads = set()
    for _ in range(40):
        item = dataset[0]
        frames = [round((float(level) - 20) / 30) for level in item["pha"].float().mean(dim=(1, 2, 3))]
        assert item["index"] == frames[0] or frames != sorted(
            frames
        )  # index: the first frame (unless reversed)
        reads.add(tuple(sorted(frames)))
    steps = {tuple(b - a for a, b in zip(frames, frames[1:], strict=False)) for frames in reads}
    assert {(0, 1), (1, 1), (2, 2)} <= steps  # 0.5x repeats frames, 1x, 2x skips (3x is capped at the end)
    assert all(0 <= frames[0] and frames[-1] < 6 for frames in reads)


def test_loader_batches_and_an_rgb_alpha_is_read_as_grey(data):
    root, bgr = data
    batch = next(iter(DataLoader(VideoMatteDataset(root, bgr, clip_length=2), batch_size=2, num_workers=1)))
    assert batch["src"].shape == (2, 2, 3, 48, 64) and batch["pha"].shape == (2, 2, 1, 48, 64)
    rgb = torch.tensor([[[[10]], [[200]], [[30]]]], dtype=torch.uint8)
    assert alpha_uint8(rgb).item() == round(0.299 * 10 + 0.587 * 200 + 0.114 * 30)


def test_image_mattes_become_smoothly_moving_clips(tmp_path):
    root = tmp_path / "images"
    clip = make_clip(*SIZE, 1, seed=3)
    write_frames(root / "fgr", clip.fgr)
    write_frames(root / "pha", clip.pha)
    dataset = ImageMattingDataset(root, backgrounds(tmp_path / "bg"), clip_length=5, size=SIZE, augment=False)
    item = dataset[0]
    assert item["pha"].shape == (5, 1, 48, 64) and item["video"] == "00000"
    centres = [(p.float() * torch.arange(64)).sum() / p.float().sum() for p in item["pha"][:, 0]]
    steps = torch.tensor([b - a for a, b in zip(centres, centres[1:], strict=False)])
    assert (steps - steps.mean()).abs().max() < 0.5  # a straight path: equal steps


def test_evaluation_clips_give_consecutive_frames_with_ground_truth(tmp_path):
    dataset = EvaluationClips(evaluation(tmp_path / "eval"))
    assert [(v.name, v.num_frames) for v in dataset.videos] == [("clip0", 4), ("clip1", 4)]
    item = dataset[5]
    assert (item["video"], item["index"]) == ("clip1", 1)
    assert (
        item["src"].shape == (3, 48, 64)
        and item["pha"].shape == (1, 48, 64)
        and item["bgr"].shape == (3, 48, 64)
    )


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda root, bg: shutil.rmtree(root / "pha" / "a"), r"clip 'a' has fgr .* but no pha"),
        (
            lambda root, bg: (root / "pha" / "a" / "00005.png").unlink(),
            r"clip 'a' has different frame counts: \{'fgr': 6, 'pha': 5\}",
        ),
        (
            lambda root, bg: cv2.imwrite(str(root / "pha" / "a" / "00005.png"), np.zeros((10, 10), np.uint8)),
            r"image .*pha/a/00005.png is 10x10 but the sequence is 64x48",
        ),
        (lambda root, bg: [p.unlink() for p in bg.iterdir()], r"backgrounds folder .* holds no images"),
        (
            lambda root, bg: (root / "fgr" / "a" / "00002.png").write_bytes(b"broken"),
            r"fgr/a: frame 2, .*fgr/a/00002.png, is not an image",
        ),
    ],
    ids=["fgr-without-pha", "frame-counts", "sizes", "empty-backgrounds", "unreadable-frame"],
)
def test_bad_datasets_are_named(data, damage, match):
    root, bgr = data
    damage(root, bgr)
    with pytest.raises(ValueError, match=match):
        dataset = VideoMatteDataset(root, bgr, clip_length=3, augment=False)
        [dataset[i] for i in range(len(dataset))]


def test_fine_tuning_from_a_checkpoint_lowers_the_validation_loss_and_logs_the_clips(data, tmp_path):
    root, bgr = data
    torch.manual_seed(0)
    dm = VideoMattingDataModule(
        batch_size=4,
        train=TrainingDataSettings(
            data="videomatte",
            root=str(root),
            backgrounds_root=str(bgr),
            val_root=str(evaluation(tmp_path / "eval")),
            size=SIZE,
            augment=False,
        ),
    )
    module = MattingModule(
        "mattingbase-mobilenetv2", checkpoint=str(DEMO_WEIGHTS), training=TrainingSettings(learning_rate=1e-3)
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=CSVLogger(tmp_path / "logs"),
        callbacks=[VideoWriterCallback(tmp_path / "out", outputs=["pha"], val_videos=2)],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=-1,  # the loss before any step, on the same clips
    )
    dm_val = trainer.validate(module, datamodule=dm, verbose=False)[0]["val/MSE"]
    trainer.fit(module, datamodule=dm)
    rows = [
        row
        for row in csv.DictReader(open(next((tmp_path / "logs").rglob("metrics.csv"))))
        if row.get("val/MSE")
    ]
    assert float(rows[-1]["val/MSE"]) < dm_val
    for clip in ("clip0", "clip1"):
        assert len(read_video(next((tmp_path / "out" / "val").rglob(f"epoch=1/{clip}/pha.mp4")))[0]) == 4


@pytest.mark.parametrize(
    ("config", "overrides"),
    [
        ("configs/finetune_bgmv2.yaml", [f"--model.checkpoint={DEMO_WEIGHTS}"]),
        # no RVM checkpoint here: untrained weights; its loss's pyramid needs 64 px
        (
            "configs/finetune_rvm.yaml",
            ["--model.checkpoint=null", "--data.train.clip_length=3", "--data.train.size=[64, 64]"],
        ),
    ],
)
def test_finetune_configs_run_with_only_the_roots_given(data, tmp_path, config, overrides):
    from test_predict import run_cli

    root, bgr = data
    result = run_cli(
        "fit",
        f"--config={config}",
        f"--data.train.root={root}",
        f"--data.train.backgrounds_root={bgr}",
        f"--data.train.val_root={evaluation(tmp_path / 'eval')}",
        "--data.train.size=[64, 48]",
        "--data.num_workers=0",
        "--trainer.max_steps=2",
        "--trainer.val_check_interval=1",
        "--trainer.limit_val_batches=2",
        "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'logs'}",
        f"--trainer.callbacks.init_args.output_dir={tmp_path / 'out'}",
        *overrides,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert list((tmp_path / "out" / "val").rglob("compare.mp4"))


def test_synthetic_windows_mix_into_a_real_training_set_as_like_items(data):
    root, bgr = data
    dm = VideoMattingDataModule(
        train=TrainingDataSettings(
            data="videomatte",
            root=str(root),
            backgrounds_root=str(bgr),
            clip_length=3,
            size=SIZE,
            mix_synthetic=0.5,
            clips=1,
        ),
        synthetic=SyntheticSettings(frames=6),
    )
    dm.setup("fit")
    assert len(dm.train_dataset) == 8  # the 4 real windows and as many synthetic ones: half of the items
    real, synthetic = dm.train_dataset[0], dm.train_dataset[7]
    assert synthetic["video"].startswith("synthetic_") and real["video"] in ("a", "b")
    for key in ("src", "bgr", "fgr", "pha"):
        assert synthetic[key].dtype == real[key].dtype == torch.uint8
        assert synthetic[key].shape == real[key].shape
    batch = next(iter(DataLoader(dm.train_dataset, batch_size=8)))  # they collate together
    assert batch["src"].shape == (8, 3, 3, 48, 64)
    assert 0 < int(batch["pha"].float().mean()) < 255


def test_a_real_dataset_needs_its_roots(tmp_path):
    with pytest.raises(
        ValueError,
        match=r"data.train.data='videomatte' needs data.train.root .* and data.train.backgrounds_root",
    ):
        VideoMattingDataModule(train=TrainingDataSettings(data="videomatte"))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (
            lambda root, bg: VideoMatteDataset(root, bg, clip_length=7),
            r"clip 'a' has 6 frames, fewer than clip_length=7",
        ),
        (
            lambda root, bg: VideoMatteDataset(root, bg, clip_length=0),
            r"^invalid clip_length \(0\): expected an int >= 1$",
        ),
        (
            lambda root, bg: VideoMattingDataModule(train=TrainingDataSettings(data="photos")),
            r"^invalid data.train.data \('photos'\): expected one of 'synthetic', 'videomatte', 'images'$",
        ),
        (
            lambda root, bg: VideoMattingDataModule(
                train=TrainingDataSettings(
                    data="videomatte", root=str(root), backgrounds_root=str(bg), mix_synthetic=1.0
                )
            ),
            r"^invalid data.train.mix_synthetic \(1.0\): expected a number in \[0, 1\)$",
        ),
        (
            lambda root, bg: VideoMattingDataModule(train=TrainingDataSettings(mix_synthetic=0.2)),
            r"^data.train.mix_synthetic mixes procedural clips into real training data: data.train.data "
            r"'videomatte' or 'images'$",
        ),
        (
            lambda root, bg: VideoMattingDataModule(
                train=TrainingDataSettings(
                    data="images", root=str(root), backgrounds_root=str(bg), mix_synthetic=0.2, clips=0
                )
            ),
            r"^data.train.mix_synthetic needs data.train.clips >= 1 procedural clips to draw from, got 0$",
        ),
    ],
    ids=["clip-too-short", "clip-length-0", "train-data", "mix-1", "mix-synthetic", "mix-no-clips"],
)
def test_bad_dataset_settings_are_named(data, make, match):
    with pytest.raises(ValueError, match=match):
        make(*data)


def test_a_pha_clip_without_fgr_and_clips_of_two_sizes_are_named(data, tmp_path):
    root, bgr = data
    shutil.copytree(root / "pha" / "a", root / "pha" / "c")
    with pytest.raises(ValueError, match=r"clips \['c'\] have no fgr in .*fgr"):
        VideoMatteDataset(root, bgr)
    shutil.rmtree(root / "pha" / "c")
    clip = make_clip(32, 24, 6, seed=5)
    write_frames(root / "fgr" / "small", clip.fgr)
    write_frames(root / "pha" / "small", clip.pha)
    with pytest.raises(
        ValueError, match=r"clips of sizes \[\(32, 24\), \(64, 48\)\]: give size=\(width, height\)"
    ):
        VideoMatteDataset(root, bgr)
    assert VideoMatteDataset(root, bgr, size=SIZE, augment=False)[0]["src"].shape == (3, 48, 64)


def test_an_image_matte_whose_alpha_differs_in_size_is_named(tmp_path):
    root = tmp_path / "images"
    write_frames(root / "fgr", make_clip(*SIZE, 1, seed=3).fgr)
    write_frames(root / "pha", make_clip(32, 24, 1, seed=3).pha)
    dataset = ImageMattingDataset(root, backgrounds(tmp_path / "bg"), clip_length=2, size=SIZE)
    with pytest.raises(
        ValueError, match=r"image '00000': fgr .*00000.png is 64x48 but pha .*00000.png is 32x24"
    ):
        dataset[0]
