"""Grouped settings: each group checks its fields, nests in YAML, survives a checkpoint; old flat keys are
refused on the command line naming their new place."""

from __future__ import annotations

import inspect
import math

import lightning
import pytest
import torch
import yaml
from lightning.pytorch.core.saving import load_hparams_from_yaml, save_hparams_to_yaml
from test_cli import run_main

from lightning_matting.cli import main
from lightning_matting.cli_errors import HINT
from lightning_matting.data import VideoMattingDataModule
from lightning_matting.data.settings import (
    HighResSettings,
    LiveSettings,
    SyntheticSettings,
    TrainingDataSettings,
)
from lightning_matting.module import MattingModule
from lightning_matting.moved_settings import MOVED
from lightning_matting.settings import RefineSettings, TrainingSettings

BAD_SETTINGS = [
    (
        lambda: LiveSettings(realtime="yes"),
        TypeError,
        "invalid data.live.realtime ('yes'): expected true or false",
    ),
    (lambda: LiveSettings(timeout=0), ValueError, "invalid data.live.timeout (0): expected a number > 0"),
    (
        lambda: LiveSettings(reconnects=-1),
        ValueError,
        "invalid data.live.reconnects (-1): expected an int >= 0",
    ),
    (
        lambda: SyntheticSettings(clips=1.5),
        TypeError,
        "invalid data.synthetic.clips (1.5): expected an int >= 0",
    ),
    (
        lambda: SyntheticSettings(size=(8,)),
        TypeError,
        "invalid data.synthetic.size ((8,)): expected (width, height), two ints >= 1",
    ),
    (
        lambda: SyntheticSettings(size=(64, 0)),
        ValueError,
        "invalid data.synthetic.size ((64, 0)): expected (width, height), two ints >= 1",
    ),
    (
        lambda: SyntheticSettings(frames=0),
        ValueError,
        "invalid data.synthetic.frames (0): expected an int >= 1",
    ),
    (
        lambda: SyntheticSettings(fps="fast"),
        ValueError,
        "invalid data.synthetic.fps ('fast'): expected a number > 0 or a fraction like '30000/1001' (frames/s)",
    ),
    (
        lambda: SyntheticSettings(dir=3),
        TypeError,
        "invalid data.synthetic.dir (3): expected a folder path or null",
    ),
    (
        lambda: SyntheticSettings(seed=-1),
        ValueError,
        "invalid data.synthetic.seed (-1): expected an int >= 0",
    ),
    (
        lambda: TrainingDataSettings(data="photos"),
        ValueError,
        "invalid data.train.data ('photos'): expected one of 'synthetic', 'videomatte', 'images'",
    ),
    (
        lambda: TrainingDataSettings(data="images", root="mattes"),
        ValueError,
        "data.train.data='images' needs data.train.root (the dataset folder with fgr/ and pha/) and "
        "data.train.backgrounds_root (a folder of background images or videos); got 'mattes', None",
    ),
    (
        lambda: TrainingDataSettings(clip_length=0),
        ValueError,
        "invalid data.train.clip_length (0): expected an int >= 1",
    ),
    (
        lambda: TrainingDataSettings(val_clips=-1),
        ValueError,
        "invalid data.train.val_clips (-1): expected an int >= 0",
    ),
    (
        lambda: TrainingDataSettings(augment=1),
        TypeError,
        "invalid data.train.augment (1): expected true or false",
    ),
    (
        lambda: TrainingDataSettings(size=(512, -288)),
        ValueError,
        "invalid data.train.size ((512, -288)): expected (width, height), two ints >= 1",
    ),
    (
        lambda: HighResSettings(size=[2048]),
        TypeError,
        "invalid data.high_res.size ([2048]): expected (width, height), two ints >= 1",
    ),
    (
        lambda: RefineSettings(backbone_scale=0.75),
        ValueError,
        "invalid model.refine.backbone_scale (0.75): expected a number in (0, 0.5]",
    ),
    (
        lambda: RefineSettings(mode="fast"),
        ValueError,
        "invalid model.refine.mode ('fast'): expected one of 'full', 'sampling', 'thresholding'",
    ),
    (
        lambda: RefineSettings(sample_pixels=0),
        ValueError,
        "invalid model.refine.sample_pixels (0): expected an int >= 1",
    ),
    (
        lambda: RefineSettings(threshold=math.nan),
        ValueError,
        "invalid model.refine.threshold (nan): expected a number in [0, 1]",
    ),
    (
        lambda: RefineSettings(kernel_size=2),
        ValueError,
        "invalid model.refine.kernel_size (2): expected one of 1, 3",
    ),
    (
        lambda: RefineSettings(prevent_oversampling="no"),
        TypeError,
        "invalid model.refine.prevent_oversampling ('no'): expected true or false",
    ),
    (
        lambda: TrainingSettings(learning_rate="fast"),
        TypeError,
        "invalid model.training.learning_rate ('fast'): expected a number >= 0",
    ),
    (
        lambda: TrainingSettings(refiner_learning_rate=-1e-4),
        ValueError,
        "invalid model.training.refiner_learning_rate (-0.0001): expected a number >= 0",
    ),
    (
        lambda: MattingModule("rvm-mobilenetv3", training={"rate": 1}),
        TypeError,
        "invalid model.training ({'rate': 1}): expected a TrainingSettings or a mapping of its fields (stage, "
        "learning_rate, backbone_learning_rate, refiner_learning_rate, high_res_downsample_ratio)",
    ),
    (
        lambda: VideoMattingDataModule(train={"clips": 4}),
        TypeError,
        "invalid data.train ({'clips': 4}): expected a TrainingDataSettings",
    ),
]


@pytest.mark.parametrize(("make", "error", "message"), BAD_SETTINGS)
def test_a_bad_setting_is_named_as_typed(make, error, message):
    with pytest.raises(error) as raised:
        make()
    assert str(raised.value) == message


def test_the_constructors_take_at_most_twelve_settings():
    for cls in (MattingModule, VideoMattingDataModule):
        assert len(inspect.signature(cls.__init__).parameters) - 1 <= 12, cls


def test_the_groups_reach_the_network_and_the_datamodule():
    module = MattingModule(
        "mattingrefine-mobilenetv2",
        refine=RefineSettings(mode="thresholding", threshold=0.3, backbone_scale=0.125),
    )
    assert (module.net.refiner.mode, module.net.refiner.threshold, module.net.backbone_scale) == (
        "thresholding",
        0.3,
        0.125,
    )
    data = VideoMattingDataModule(
        synthetic=SyntheticSettings(size=(64, 48), frames=3),
        train=TrainingDataSettings(clips=2, val_clips=1),
    )
    data.setup("fit")
    assert len(data.train_dataset) == 6 and data.train_dataset[0]["src"].shape[-2:] == (48, 64)


def test_a_checkpoint_and_hparams_yaml_hold_the_groups_as_plain_data(tmp_path):
    refine, training = RefineSettings(mode="full"), TrainingSettings(stage="base", learning_rate=1e-3)
    module = MattingModule("mattingrefine-mobilenetv2", refine=refine, training=training)
    assert module.hparams["refine"] == {**dict.fromkeys(module.hparams["refine"]), "mode": "full"}
    checkpoint = tmp_path / "module.ckpt"
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": lightning.__version__,
        },
        checkpoint,
    )
    loaded = MattingModule.load_from_checkpoint(checkpoint)  # weights_only: no pickled classes
    assert loaded.training_settings == training and loaded.net.refiner.mode == "full"
    save_hparams_to_yaml(tmp_path / "hparams.yaml", module.hparams)
    assert "!!python" not in (tmp_path / "hparams.yaml").read_text().replace("!!python/tuple", "")
    assert load_hparams_from_yaml(tmp_path / "hparams.yaml")["training"]["stage"] == "base"


def printed_config(args: list[str], capsys) -> dict:
    """The config `lightning-matting *args --print_config` prints."""
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def test_print_config_nests_the_groups_and_reads_back(tmp_path, capsys):
    printed = printed_config(
        ["fit", "--model.refine.mode=full", "--data.train.clips=4", "--data.live.timeout=2.5"], capsys
    )
    assert printed["model"]["refine"]["mode"] == "full" and printed["model"]["training"]["stage"] is None
    assert printed["data"]["train"]["clips"] == 4 and printed["data"]["live"]["timeout"] == 2.5
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(printed))
    assert printed_config(["fit", "--config", str(tmp_path / "config.yaml")], capsys) == printed


def test_help_lists_the_groups_fields(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    out = capsys.readouterr().out
    for flag in (
        "--model.refine.mode",
        "--model.training.learning_rate",
        "--data.live.realtime",
        "--data.synthetic.clips",
        "--data.train.clip_length",
        "--data.high_res.size",
    ):
        assert flag in out, flag


@pytest.mark.parametrize(
    ("args", "config", "message"),
    [
        (["--data.train_clips", "4"], None, "data.train_clips moved: it is now data.train.clips"),
        (["--data.synthetic=1"], None, "data.synthetic moved: it is now data.synthetic.clips"),
        (
            [],
            "model:\n  refine_mode: full\n  learning_rate: 0.001\ndata:\n  live_timeout: 2\n",
            "model.refine_mode moved: it is now model.refine.mode; model.learning_rate moved: it is now "
            "model.training.learning_rate; data.live_timeout moved: it is now data.live.timeout",
        ),
    ],
    ids=["flag", "synthetic-count", "config-file"],
)
def test_an_old_flat_key_is_refused_naming_its_new_place(
    args, config, message, tmp_path, monkeypatch, capsys
):
    monkeypatch.delenv("LIGHTNING_MATTING_DEBUG", raising=False)
    if config is not None:
        (tmp_path / "old.yaml").write_text(config)
        args = ["-c", str(tmp_path / "old.yaml"), *args]
    code, stderr = run_main(["fit", *args], capsys)
    assert (code, stderr) == (2, [f"error: {message}", HINT])


def test_every_moved_key_names_a_setting_of_the_command(capsys):
    printed = printed_config(["fit"], capsys)
    for old, new in MOVED.items():
        section, *path = new.split(".")
        value = printed[section]
        for name in path:
            value = value[name]  # KeyError: a new place that does not exist
        assert old.split(".")[1] not in printed[section], old
