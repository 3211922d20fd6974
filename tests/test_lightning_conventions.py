"""Lightning conventions: checkpoints, package imports, version and typing marker."""

from __future__ import annotations

import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from test_cli import cli_output
from test_predict import ROOT, MeanMatte, plate, run_cli, write_counter_clip

import lightning_matting
from lightning_matting.callbacks import VideoWriterCallback
from lightning_matting.data import VideoMattingDataModule
from lightning_matting.data.settings import SyntheticSettings, TrainingDataSettings
from lightning_matting.module import MattingModule

DEMO_WEIGHTS = ROOT / "lightning_matting" / "assets" / "demo_mattingbase_mobilenetv2.pth"


def test_a_lightning_checkpoint_loads_without_the_original_pth_and_counts_as_trained(tmp_path):
    weights = tmp_path / "weights.pth"
    shutil.copy(DEMO_WEIGHTS, weights)
    module = MattingModule("mattingbase-mobilenetv2", checkpoint=str(weights))
    saver = ModelCheckpoint(tmp_path / "ckpt", save_last=True)
    data = VideoMattingDataModule(
        synthetic=SyntheticSettings(size=(64, 48), frames=2), train=TrainingDataSettings(clips=1, val_clips=1)
    )
    L.Trainer(
        accelerator="cpu",
        max_steps=1,
        logger=False,
        callbacks=[saver],
        enable_progress_bar=False,
        limit_val_batches=0,
    ).fit(module, datamodule=data)
    assert module.hparams.checkpoint == str(weights)  # the live module keeps its settings
    weights.unlink()  # moved away

    loaded = MattingModule.load_from_checkpoint(tmp_path / "ckpt" / "last.ckpt")
    assert all(
        torch.equal(a, b)
        for a, b in zip(loaded.state_dict().values(), module.state_dict().values(), strict=True)
    )

    source = write_counter_clip(tmp_path / "clip.mkv", 2)
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        callbacks=[VideoWriterCallback(tmp_path / "out", outputs=["pha"])],
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*untrained weights")
        trainer.predict(
            MattingModule("mattingbase-mobilenetv2"),
            VideoMattingDataModule(sources=[str(source)], backgrounds=[plate(tmp_path)]),
            ckpt_path=tmp_path / "ckpt" / "last.ckpt",
            return_predictions=False,
        )


def test_writers_and_metadata_import_without_lightning():
    code = (
        "import sys, lightning_matting.writers, lightning_matting.metadata, lightning_matting.data.readers; "
        "print(sorted(m for m in ('lightning', 'torchmetrics') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert result.stdout.strip() == "[]"


def test_version_and_typing_marker():
    assert lightning_matting.__version__.count(".") >= 2
    assert (Path(lightning_matting.__file__).parent / "py.typed").is_file()
    assert lightning_matting.MattingModule is MattingModule and "VideoWriterCallback" in dir(
        lightning_matting
    )


def test_no_transfer_hook_warning_from_a_script(tmp_path):
    source = write_counter_clip(tmp_path / "clip.mkv", 2)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="You have overridden `.*batch_transfer")
        warnings.filterwarnings("error", message="You have overridden `transfer_batch_to_device`")
        trainer.predict(
            MattingModule(MeanMatte()),
            VideoMattingDataModule(sources=[str(source)], backgrounds=[plate(tmp_path)]),
            return_predictions=False,
        )


def test_cli_help_lists_the_variants_and_codecs_and_bad_choices_fail_in_a_few_lines(capsys):
    status, help_text, _ = cli_output(["predict", "--help"], capsys)
    assert status == 0
    assert "Literal['mattingbase-resnet50'" in help_text and "'rvm-mobilenetv3'" in help_text
    model_help = help_text[
        help_text.rindex("--model.model MODEL") : help_text.rindex("--model.checkpoint CHECKPOINT")
    ]
    assert "known subclasses" not in model_help  # the network is a protocol, not every nn.Module
    assert '"full" (every pixel), "sampling"' in help_text  # descriptions from Args: (of RefineSettings)
    callback_help = cli_output(["predict", "--trainer.callbacks.help", "VideoWriterCallback"], capsys)[1]
    assert "'prores4444'" in callback_help and "{outputs,compare}" in callback_help
    status, _, error = cli_output(["predict", "--model.refine.mode=fast"], capsys)
    assert status == 2
    assert error.splitlines()[0] == (
        "error: model.refine.mode: Expected a typing.Literal['full', 'sampling', 'thresholding']. Got value: fast"
    )


def test_an_output_name_the_module_cannot_make_is_refused_before_the_run_naming_the_choices(tmp_path):
    result = run_cli(
        "predict",
        "--config=configs/demo.yaml",
        f"--data.synthetic.dir={tmp_path / 'in'}",
        "--data.synthetic.frames=2",
        f"--trainer.callbacks.init_args.output_dir={tmp_path / 'out'}",
        "--trainer.callbacks.init_args.outputs=[com, foo]",
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-2] == (
        "error: invalid outputs of VideoWriterCallback ('foo'): expected one of 'com', 'pha', 'fgr', 'err', "
        "'ref', 'seg'"
    )
    assert not (tmp_path / "in").exists()  # refused before any clip is made


def test_progress_bar_shows_the_video_and_frames_per_second_and_files_are_listed_after_it(tmp_path):
    result = run_cli(
        "predict",
        "--config=configs/demo.yaml",
        f"--data.synthetic.dir={tmp_path / 'in'}",
        "--data.synthetic.frames=8",
        f"--trainer.callbacks.init_args.output_dir={tmp_path / 'out'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = (result.stdout + result.stderr).replace("\r", "\n").splitlines()
    listed = [k for k, line in enumerate(lines) if line.startswith("com: ") and line.endswith("(8 frames)")]
    assert listed
    tqdm = [k for k, line in enumerate(lines) if "Predicting DataLoader 0" in line]
    if tqdm:  # the video and rate after the bar; the files listed below it
        assert "synthetic_000, " in lines[tqdm[-1]] and " frames/s]" in lines[tqdm[-1]]
        assert listed[0] > tqdm[-1]
    else:  # Lightning draws a Rich bar where rich is installed: the video and rate in its description
        rich = [line for line in lines if line.startswith("Predicting synthetic_000, ")]
        assert rich and " frames/s " in rich[-1], lines
