"""Validation videos of a researcher's own LightningModule: failures at the sanity check, every fallback said."""

from __future__ import annotations

import dataclasses
import warnings

import lightning as L
import numpy as np
import pytest
import torch
from conftest import read_video
from test_writers_pyav import read_av
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lightning_matting.callbacks import VideoWriterCallback
from lightning_matting.callbacks.step_frames import compare_sources

FRAMES, HEIGHT, WIDTH = 8, 24, 32
NO_FRAMES = r"validation_step returned no frames to write \(None, a loss, or a mapping of only 'loss'\)"


class OwnModule(L.LightningModule):
    """Any module: `validate(self, batch)` is what its validation_step returns; training steps are counted."""

    def __init__(self, validate):
        super().__init__()
        self.net = torch.nn.Conv2d(3, 1, 1)
        self.validate = validate
        self.trained = 0

    def training_step(self, batch, i):
        self.trained += 1
        return self.net(source_of(batch)).mean()

    def validation_step(self, batch, i):
        return self.validate(self, batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def source_of(batch):
    if isinstance(batch, dict):
        return batch.get("src", batch.get("image"))
    return batch.src if dataclasses.is_dataclass(batch) else batch[0]


def clips() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(
        torch.rand(FRAMES, 3, HEIGHT, WIDTH, generator=g), torch.rand(FRAMES, 1, HEIGHT, WIDTH, generator=g)
    )


def fit(tmp_path, validate, data=None, collate=None, **callback_kwargs) -> OwnModule:
    callback = VideoWriterCallback(tmp_path / "out", **({"outputs": ["pha"]} | callback_kwargs))
    trainer = L.Trainer(
        accelerator="cpu",
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=2,
    )
    module = OwnModule(validate)
    loader = DataLoader(data or clips(), batch_size=4, collate_fn=collate)
    trainer.fit(module, loader, loader)
    return module


def epoch_folder(tmp_path):
    return tmp_path / "out" / "val" / "run_0" / "epoch=0" / "val_0"


def files_under(folder) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


@pytest.mark.parametrize(
    "returned",
    [lambda batch: None, lambda batch: batch[1].mean(), lambda batch: {"loss": batch[1].mean()}],
    ids=["none", "bare-loss", "loss-only"],
)
def test_a_validation_step_without_frames_warns_once_and_writes_nothing(tmp_path, returned):
    with pytest.warns(UserWarning, match=NO_FRAMES) as caught:
        fit(tmp_path, lambda self, batch: returned(batch))
    assert len([w for w in caught if "returned no frames" in str(w.message)]) == 1
    assert "return the frames to write, such as {'pha': frames, 'loss': loss} for outputs=['pha']" in str(
        next(w for w in caught if "returned no frames" in str(w.message)).message
    )
    assert files_under(tmp_path / "out") == []


def test_bad_validation_outputs_fail_at_the_sanity_check_and_write_nothing(tmp_path):
    module = OwnModule(lambda self, batch: {"pha": batch[0][:, :2]})
    callback = VideoWriterCallback(tmp_path / "out", outputs=["pha"])
    trainer = L.Trainer(
        accelerator="cpu",
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=2,
    )
    loader = DataLoader(clips(), batch_size=4)
    with pytest.raises(ValueError, match=r"the step's output\['pha'\] must be a Tensor \[B,C,H,W\]"):
        trainer.fit(module, loader, loader)
    assert module.trained == 0
    assert files_under(tmp_path / "out") == []


def rgba(batch) -> torch.Tensor:
    return torch.cat([batch[0], batch[1]], dim=1)


def test_rgba_validation_outputs_are_vp9_with_alpha(tmp_path):
    fit(tmp_path, lambda self, batch: {"com": rgba(batch)}, outputs=["com"])
    frames, info = read_av(epoch_folder(tmp_path) / "com.webm", format="rgba")
    assert (info.codec, len(frames), frames.shape[1:]) == ("vp9", FRAMES, (HEIGHT, WIDTH, 4))
    truth = clips().tensors[1][:, 0].mul(255).numpy()
    assert np.abs(frames[..., 3].astype(float) - truth).mean() < 12  # the alpha is the matte (VP9 noise)


def test_a_chosen_codec_is_kept_for_rgba_validation_outputs(tmp_path):
    fit(tmp_path, lambda self, batch: {"com": rgba(batch)}, outputs=["com"], codec="ffv1")
    frames, info = read_av(epoch_folder(tmp_path) / "com.mkv", format="rgba")
    assert (info.codec, info.pix_fmt, len(frames)) == ("ffv1", "bgra", FRAMES)


def test_a_chosen_codec_without_alpha_refuses_rgba_at_the_sanity_check_naming_the_output(tmp_path):
    with pytest.raises(
        ValueError,
        match=r"output 'com' has 4 channels \(RGBA\), which codec 'h264' cannot store: choose codec= one of "
        r"prores4444, vp9, ffv1 \(PyAV\), or format='image_sequence'",
    ):
        fit(tmp_path, lambda self, batch: {"com": rgba(batch)}, outputs=["com"], codec="h264")
    assert files_under(tmp_path / "out") == []


def test_outputs_of_different_sizes_in_one_video_name_both(tmp_path):
    step = lambda self, batch: {"pha": batch[1], "fgr": batch[0][..., ::2, ::2]}  # noqa: E731
    with pytest.raises(
        ValueError,
        match=r"the outputs of video 'val_0' differ in size: pha 32x24, fgr 16x12 \(WxH\); every output of a "
        r"video must have one size",
    ):
        fit(tmp_path, step, outputs=["pha", "fgr"])
    assert files_under(tmp_path / "out") == []


def test_a_non_string_video_name_is_a_type_error_naming_it(tmp_path):
    with pytest.raises(TypeError, match=r"a video name must be a str, got 3 \(int\)"):
        fit(tmp_path, lambda self, batch: {"pha": batch[1], "video": 3})


def test_hostile_validation_video_names_stay_inside_the_output_folder(tmp_path):
    with pytest.warns(UserWarning, match=r"video '/abs/\.\./path' is written to the folder '_abs_\.\._path'"):
        fit(tmp_path, lambda self, batch: {"pha": batch[1], "video": "/abs/../path"})
    assert files_under(tmp_path) == ["out/val/run_0/epoch=0/_abs_.._path/pha.mp4"]


@dataclasses.dataclass
class Sample:
    src: torch.Tensor
    pha: torch.Tensor


def as_samples(items) -> Sample:
    return Sample(torch.stack([item[0] for item in items]), torch.stack([item[1] for item in items]))


class Named(Dataset):
    """Items {"image", "matte"}: frames of `clips()` under other keys."""

    def __len__(self):
        return FRAMES

    def __getitem__(self, i):
        src, pha = clips()[i]
        return {"image": src, "matte": pha}


@pytest.mark.parametrize(
    ("batch", "keys", "taken", "lacking"),
    [
        ({"src": 0, "pha": 1}, None, {"<input>": "src", "<truth>": "pha"}, {}),
        ({"src": 0}, None, {"<input>": "src"}, {"<truth>": "pha"}),
        (Sample(0, 1), None, {"<input>": "src", "<truth>": "pha"}, {}),
        ((0,), None, {"<input>": 0}, {"<truth>": 1}),
        ({"a": 0}, ("a", "b"), {"<input>": "a", "<truth>": "b"}, {}),  # named: step_runs refuses "b"
    ],
    ids=["mapping", "mapping-without-truth", "dataclass", "short-tuple", "named"],
)
def test_compare_sources_take_the_named_keys_or_the_defaults_the_batch_holds(batch, keys, taken, lacking):
    assert compare_sources(batch, keys) == (taken, lacking)


def compare_width(tmp_path) -> int:
    frames, _, width, height = read_video(epoch_folder(tmp_path) / "compare.mp4")
    assert (len(frames), height) == (FRAMES, HEIGHT)
    return width


def test_compare_takes_input_and_truth_from_a_dataclass_batch(tmp_path):
    step = lambda self, batch: {"pha": torch.sigmoid(self.net(batch.src))}  # noqa: E731
    fit(tmp_path, step, collate=as_samples, val_layout="compare")
    assert compare_width(tmp_path) == 3 * WIDTH


def test_compare_keys_name_items_of_a_mapping_batch(tmp_path):
    step = lambda self, batch: {"pha": batch["matte"]}  # noqa: E731
    fit(tmp_path, step, data=Named(), val_layout="compare", compare_keys=("image", "matte"))
    assert compare_width(tmp_path) == 3 * WIDTH


def test_a_compare_key_the_batch_lacks_is_an_error_naming_it(tmp_path):
    step = lambda self, batch: {"pha": batch["matte"]}  # noqa: E731
    with pytest.raises(
        ValueError,
        match=r"compare_keys names 'truth', which the batch lacks \(a dict with keys \['image', 'matte'\]\)",
    ):
        fit(tmp_path, step, data=Named(), val_layout="compare", compare_keys=("image", "truth"))


def test_a_batch_without_the_default_compare_keys_warns_once_that_it_holds_outputs_only(tmp_path):
    step = lambda self, batch: {"pha": batch["matte"]}  # noqa: E731
    with pytest.warns(UserWarning, match=r"the batch has no 'src' and no 'pha'") as caught:
        fit(tmp_path, step, data=Named(), val_layout="compare")
    assert len([w for w in caught if "no 'src'" in str(w.message)]) == 1
    message = next(str(w.message) for w in caught if "no 'src'" in str(w.message))
    assert "the compare video holds the outputs only; give compare_keys=" in message
    assert compare_width(tmp_path) == WIDTH


def test_image_sequences_are_honoured_in_validation(tmp_path):
    fit(tmp_path, lambda self, batch: {"pha": batch[1]}, format="image_sequence")
    images = sorted((epoch_folder(tmp_path) / "pha").iterdir())
    assert [path.suffix for path in images] == [".png"] * FRAMES
    assert files_under(tmp_path / "out" / "val") == [
        f"run_0/epoch=0/val_0/pha/{path.name}" for path in images
    ]  # no video beside them


def test_a_step_that_stops_giving_an_output_is_named_and_leaves_no_parts(tmp_path):
    calls = iter(range(10))
    step = lambda self, batch: {"pha": batch[1]} if next(calls) == 0 else {"fgr": batch[0]}  # noqa: E731
    callback = VideoWriterCallback(tmp_path / "out", outputs=["pha"])
    trainer = L.Trainer(accelerator="cpu", callbacks=[callback], logger=False, enable_progress_bar=False)
    module = OwnModule(step)
    module.predict_step = module.validation_step
    with pytest.raises(
        ValueError, match=r"outputs \['pha'\] are not in the step's output; its keys are \['fgr'\]"
    ):
        trainer.predict(module, DataLoader(clips(), batch_size=4), return_predictions=False)
    assert files_under(tmp_path / "out") == ["predict_0/pha.mp4"]  # the frames written, playable
    assert len(read_video(tmp_path / "out" / "predict_0" / "pha.mp4")[0]) == 4


def test_fast_dev_run_writes_a_new_numbered_run_folder_each_time(tmp_path):
    for _ in range(2):
        callback = VideoWriterCallback(tmp_path / "out", outputs=["pha"])
        trainer = L.Trainer(
            accelerator="cpu", callbacks=[callback], fast_dev_run=True, enable_progress_bar=False
        )
        loader = DataLoader(clips(), batch_size=4)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit(OwnModule(lambda self, batch: {"pha": batch[1]}), loader, loader)
    assert files_under(tmp_path / "out") == [
        "val/run_0/epoch=0/val_0/pha.mp4",
        "val/run_1/epoch=0/val_0/pha.mp4",
    ]
