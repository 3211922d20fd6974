"""VideoWriterCallback with anyone's LightningModule and DataLoader: no metadata, no datamodule."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from conftest import read_video
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lightning_matting.callbacks import VideoWriterCallback
from lightning_matting.callbacks.video_files import VideoFiles
from lightning_matting.writers import OutputFormat

FRAMES, HEIGHT, WIDTH = 16, 64, 96


class MyMatting(L.LightningModule):
    """A researcher's module, written without knowing this package."""

    def __init__(self, step=None):
        super().__init__()
        self.net = torch.nn.Conv2d(3, 1, 3, padding=1)
        self.step = step or (lambda self, batch: {"pha": torch.sigmoid(self.net(batch[0]))})

    def training_step(self, batch, i):
        src, pha = batch
        return torch.nn.functional.l1_loss(torch.sigmoid(self.net(src)), pha)

    def validation_step(self, batch, i):
        src, pha = batch
        out = torch.sigmoid(self.net(src))
        self.log("val/l1", (out - pha).abs().mean())
        return {"pha": out}

    def predict_step(self, batch, i, dataloader_idx=0):
        return self.step(self, batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader(frames: int = FRAMES, seed: int = 0, height: int = HEIGHT) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    data = TensorDataset(
        torch.rand(frames, 3, height, WIDTH, generator=g), torch.rand(frames, 1, height, WIDTH, generator=g)
    )
    return DataLoader(data, batch_size=4)


def trainer(tmp_path, callback, **kwargs) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        callbacks=[callback],
        logger=kwargs.pop("logger", False),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def predict(tmp_path, step=None, loaders=None, **callback_kwargs) -> VideoWriterCallback:
    callback = VideoWriterCallback(tmp_path / "out", **({"outputs": ["pha"]} | callback_kwargs))
    trainer(tmp_path, callback).predict(MyMatting(step), loaders or loader(), return_predictions=False)
    return callback


def test_predict_with_a_tensor_dataset_writes_every_frame_at_the_given_fps(tmp_path):
    module = MyMatting()
    predict(tmp_path, fps=25)
    frames, fps, width, height = read_video(tmp_path / "out" / "predict_0" / "pha.mp4")
    assert (len(frames), fps, width, height) == (FRAMES, 25, WIDTH, HEIGHT)

    # pixels: frame k of the file is the module's prediction for sample k (mp4v: within codec noise)
    torch.manual_seed(0)
    module = MyMatting()
    callback = VideoWriterCallback(tmp_path / "lossless", outputs=["pha"], fourcc="FFV1")
    trainer(tmp_path, callback).predict(module, loader(), return_predictions=False)
    written = torch.from_numpy(read_video(tmp_path / "lossless" / "predict_0" / "pha.mkv")[0][..., 0])
    with torch.no_grad():
        expected = torch.sigmoid(module.net(loader().dataset.tensors[0]))[:, 0]
    assert torch.equal(written, expected.mul(255).round().to(torch.uint8))


@pytest.mark.parametrize(
    ("step", "outputs", "files"),
    [
        (lambda self, batch: torch.sigmoid(self.net(batch[0])), ["pha"], {"pha": FRAMES}),
        (
            lambda self, batch: (torch.sigmoid(self.net(batch[0])), batch[0]),
            ["pha", "src"],
            {"pha": 16, "src": 16},
        ),
        (  # a time run [B,T,C,H,W]: 4 samples of 4 frames -> 16 frames per batch, in order
            lambda self, batch: batch[0].unsqueeze(1).expand(-1, 4, -1, -1, -1),
            ["src"],
            {"src": FRAMES * 4},
        ),
    ],
    ids=["bare-tensor", "tuple", "time-run"],
)
def test_step_outputs_of_any_structure(tmp_path, step, outputs, files):
    predict(tmp_path, step, outputs=outputs, fourcc="FFV1")
    for name, count in files.items():
        assert len(read_video(tmp_path / "out" / "predict_0" / f"{name}.mkv")[0]) == count


def test_a_time_run_is_written_sample_after_sample_in_time_order(tmp_path):
    levels = torch.arange(8, dtype=torch.uint8).mul(30).view(2, 4, 1, 1, 1).expand(2, 4, 1, 8, 8)
    predict(tmp_path, lambda self, batch: levels, outputs=["pha"], fourcc="FFV1", loaders=loader(2))
    written = read_video(tmp_path / "out" / "predict_0" / "pha.mkv")[0]
    assert written[:, 0, 0, 0].tolist() == [30 * k for k in range(8)]


def test_two_predict_dataloaders_are_two_videos_and_select_covers_other_structures(tmp_path):
    select = lambda outputs, batch: {"alpha": outputs["nested"]["a"]}  # noqa: E731
    step = lambda self, batch: {"nested": {"a": torch.sigmoid(self.net(batch[0]))}}  # noqa: E731
    predict(tmp_path, step, [loader(8), loader(12, seed=1)], outputs=["alpha"], select=select)
    assert len(read_video(tmp_path / "out" / "predict_0" / "alpha.mp4")[0]) == 8
    assert len(read_video(tmp_path / "out" / "predict_1" / "alpha.mp4")[0]) == 12


class NamedClips(Dataset):
    """Items {"src", "video"}: two clips of 6 frames, one after the other."""

    def __len__(self):
        return 12

    def __getitem__(self, i):
        return {"src": torch.full((3, 16, 16), i / 12), "video": f"clip{i // 6}"}


def test_a_video_named_by_the_batch_gets_its_own_files_even_within_a_batch(tmp_path):
    step = lambda self, batch: {"src": batch["src"]}  # noqa: E731
    predict(tmp_path, step, DataLoader(NamedClips(), batch_size=4), outputs=["src"], fourcc="FFV1")
    for clip, first in (("clip0", 0), ("clip1", 6)):
        frames = read_video(tmp_path / "out" / clip / "src.mkv")[0]
        assert frames[:, 0, 0, 0].tolist() == [round(255 * i / 12) for i in range(first, first + 6)]


def test_fit_writes_and_hands_over_validation_videos_with_csv_files_only(tmp_path):
    callback = VideoWriterCallback(tmp_path / "out", outputs=["pha"], val_layout="compare")
    trainer(tmp_path, callback, max_epochs=2, logger=CSVLogger(tmp_path / "logs")).fit(
        MyMatting(), loader(), loader()
    )
    for epoch in (0, 1):
        frames, _, width, height = read_video(
            tmp_path / "out" / "val" / "version_0" / f"epoch={epoch}" / "val_0" / "compare.mp4"
        )
        assert (len(frames), width, height) == (FRAMES, 3 * WIDTH, HEIGHT)  # input | prediction | truth
    first = torch.from_numpy(frames[0]).float()
    truth = loader().dataset.tensors[1][0, 0] * 255  # the ground-truth tile is the truth, as grey
    assert (first[:, 2 * WIDTH :, 0] - truth).abs().mean() < 12  # mp4v/h264 noise on random pixels


def test_val_batches_limits_the_validation_video(tmp_path):
    callback = VideoWriterCallback(tmp_path / "out", outputs=["pha"], val_batches=2)
    trainer(tmp_path, callback, max_epochs=1).fit(MyMatting(), loader(), loader())
    assert len(read_video(tmp_path / "out" / "val" / "run_0" / "epoch=0" / "val_0" / "pha.mp4")[0]) == 8


@pytest.mark.parametrize(
    ("step", "outputs", "match"),
    [
        (lambda self, batch: None, ["pha"], r"the step returned None; return the frames to write"),
        (lambda self, batch: "matte", ["pha"], r"the step's output is a str; return a Tensor \[B,C,H,W\]"),
        (
            lambda self, batch: {"pha": batch[1], "fgr": batch[0]},
            ["pha", "com"],
            r"outputs \['com'\] are not in the step's output; its keys are \['fgr', 'pha'\]",
        ),
        (
            lambda self, batch: batch[0][:, :2],
            ["pha"],
            r"must be a Tensor \[B,C,H,W\] or \[B,T,C,H,W\] with C = 1 \(grey\), 3 \(RGB\) or 4 \(RGBA\), got \(4, 2, 64, 96\)",
        ),
        (
            lambda self, batch: batch[0],
            ["pha", "fgr"],
            r"the step's output is one Tensor but outputs names 2 \(\['pha', 'fgr'\]\)",
        ),
    ],
    ids=["none", "not-a-tensor", "missing-name", "two-channels", "tensor-for-two-names"],
)
def test_bad_step_outputs_are_named(tmp_path, step, outputs, match):
    with pytest.raises(ValueError, match=match):
        predict(tmp_path, step, outputs=outputs)


def test_a_size_change_mid_run_is_an_error_and_earlier_frames_stay_playable(tmp_path):
    sizes = iter([64, 64, 32])
    step = lambda self, batch: torch.zeros(4, 1, next(sizes), WIDTH)  # noqa: E731
    with pytest.raises(
        ValueError,
        match=r"output 'pha' of video 'predict_0' changed size: its frames are 96x64 \(WxH\), this batch's are 96x32",
    ):
        predict(tmp_path, step, loaders=loader(12), segment_seconds=0)
    assert len(read_video(tmp_path / "out" / "predict_0" / "pha.mp4")[0]) == 8


def test_a_video_name_reused_after_another_is_an_error(tmp_path):
    names = iter(["a", "b", "a"])
    step = lambda self, batch: {"pha": batch[1], "video": next(names)}  # noqa: E731
    with pytest.raises(ValueError, match=r"frames of video 'a' came after those of another video"):
        predict(tmp_path, step, loaders=loader(12))


def test_features_that_need_the_data_protocol_name_it(tmp_path):
    with pytest.raises(
        ValueError, match=r"resume=True needs a datamodule implementing lightning_matting.PredictVideoSource"
    ):
        predict(tmp_path, resume=True)
    (tmp_path / "out" / "predict_0").mkdir(parents=True)
    (tmp_path / "out" / "predict_0" / "pha.mp4").write_bytes(b"")
    with pytest.raises(
        FileExistsError,
        match=r"^VideoWriterCallback: 1 output\(s\) exist already \(.*predict_0.*\), left by a run that has ended .*choose another output_dir or pass overwrite=True to replace them$",
    ):
        predict(tmp_path)
    predict(tmp_path, overwrite=True)
    assert len(read_video(tmp_path / "out" / "predict_0" / "pha.mp4")[0]) == FRAMES


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"outputs": []}, r"outputs must be a non-empty list of names"),
        ({"outputs": ["../x"]}, r"outputs must be a non-empty list of names"),
        ({"fps": "fast"}, r"invalid fps \('fast'\): expected a number > 0 or a fraction like '30000/1001'"),
        ({"val_layout": "grid"}, r"invalid val_layout \('grid'\): expected one of 'outputs', 'compare'"),
        ({"val_batches": 0}, r"invalid val_batches \(0\): expected an int >= 1"),
        ({"compare_keys": ["src"]}, r"compare_keys must be \(input key, ground-truth key\)"),
        (
            {"codec": "mpeg2"},
            r"invalid codec \('mpeg2'\): expected one of 'h264', 'hevc', 'prores4444', 'vp9', 'ffv1' \(PyAV\)",
        ),
        ({"segment_seconds": -1}, r"invalid segment_seconds \(-1\): expected a number >= 0"),
        ({"queue_size": 0}, r"invalid queue_size \(0\): expected an int >= 1"),
    ],
)
def test_bad_settings_are_refused_when_made(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        VideoWriterCallback(tmp_path, **kwargs)


def test_an_unwritable_output_dir_is_named_before_any_model_work(tmp_path):
    (tmp_path / "file").write_text("")
    calls = []
    step = lambda self, batch: calls.append(1) or batch[1]  # noqa: E731
    with pytest.raises(ValueError, match=r"output_dir '.*file/out' cannot hold the outputs"):
        callback = VideoWriterCallback(tmp_path / "file" / "out", outputs=["pha"])
        trainer(tmp_path, callback).predict(MyMatting(step), loader(), return_predictions=False)
    assert calls == []


def test_video_files_write_order_and_sizes_without_a_trainer(tmp_path):
    files = VideoFiles(OutputFormat(fourcc="FFV1", segment_seconds=0.2), tmp_path, ["pha"], fps=10)
    files.add("a", {"pha": torch.zeros(3, 1, 8, 8)})
    files.add("a", {"pha": torch.ones(2, 1, 8, 8)})
    files.add("b", {"pha": torch.ones(1, 1, 4, 6)})  # "a" ends here: its segments are joined
    assert not (tmp_path / "a" / "pha.mkv.parts").exists()
    assert read_video(tmp_path / "a" / "pha.mkv")[0][:, 0, 0, 0].tolist() == [0, 0, 0, 255, 255]
    with pytest.raises(RuntimeError, match=r"b got frames 5 to 5 where frame 1 comes next"):
        files.add("b", {"pha": torch.ones(1, 1, 4, 6)}, first_index=5)
    files.close_all()
    assert read_video(tmp_path / "b" / "pha.mkv")[0].shape == (1, 4, 6, 3)
    assert files.paths == {"a": {"pha": tmp_path / "a" / "pha.mkv"}, "b": {"pha": tmp_path / "b" / "pha.mkv"}}
