"""`lightning-matting matte`, `matte()`, packaged presets and predict's own writer, as a user meets them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import torch
import yaml
from conftest import read_video
from test_predict import ROOT, write_counter_clip
from test_weights import Server

from lightning_matting import matte
from lightning_matting.cli import main as cli_main
from lightning_matting.matte_command import config_from_arguments, predict_config
from lightning_matting.models import build_model
from lightning_matting.presets import presets, resolve_config


@pytest.fixture
def rvm_weights(tmp_path) -> Path:
    """An rvm-mobilenetv3 state dict (untrained, deterministic)."""
    torch.manual_seed(0)
    path = tmp_path / "weights" / "rvm_mobilenetv3.pth"
    path.parent.mkdir()
    torch.save({k: v.half() for k, v in build_model("rvm-mobilenetv3").state_dict().items()}, path)
    return path


def test_matte_in_python_writes_every_frame_and_returns_the_paths(tmp_path, rvm_weights, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_counter_clip(tmp_path / "a.mkv", 5)
    write_counter_clip(tmp_path / "b.mkv", 3)
    written = matte("*.mkv", "rvm-mobilenetv3", checkpoint=str(rvm_weights), output="out", batch_size=2)
    assert sorted(written) == ["a", "b"]
    for video, count in (("a", 5), ("b", 3)):
        assert sorted(written[video]) == ["com", "pha"]
        frames, _, width, height = read_video(written[video]["pha"])
        assert (len(frames), width, height) == (count, 64, 48)
    assert not (tmp_path / "lightning_logs").exists()


def test_print_config_is_a_predict_config_that_runs_the_same(tmp_path, rvm_weights, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_counter_clip(tmp_path / "clip.mkv", 4)
    arguments = [
        "clip.mkv",
        "--model",
        "rvm-mobilenetv3",
        "--checkpoint",
        str(rvm_weights),
        "--outputs",
        "pha",
    ]
    cli_main(["matte", *arguments, "--print_config"])
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"] == {"model": "rvm-mobilenetv3", "checkpoint": str(rvm_weights)}
    assert config["data"]["sources"] == ["clip.mkv"]
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    cli_main(["predict", "--config", "run.yaml"])
    assert len(read_video(tmp_path / "outputs" / "clip" / "pha.mp4")[0]) == 4


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["nothing*.mp4"], "matte: the input pattern 'nothing*.mp4' matches no file or folder"),
        (
            ["a.mkv", "b.mkv", "--background", "1.png", "2.png", "3.png"],
            "matte: --background takes one plate for every input or one per input; got 3 plates for 2 inputs",
        ),
    ],
)
def test_bad_matte_arguments_are_one_paragraph(tmp_path, monkeypatch, capsys, arguments, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        cli_main(["matte", *arguments, "--model", "rvm-mobilenetv3"])
    assert stop.value.code == 2
    assert f"error: {message}" in capsys.readouterr().err


def test_a_target_colour_reaches_the_composite(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_counter_clip(tmp_path / "clip.mkv", 2)
    cli_main(
        ["matte", "clip.mkv", "--model", "rvm-mobilenetv3", "--checkpoint", "none", "--target", "#ff0000"]
    )
    pha = read_video(tmp_path / "outputs" / "clip" / "pha.mp4")[0]
    com = read_video(tmp_path / "outputs" / "clip" / "com.mp4")[0]
    assert pha.max() <= 2  # untrained: no foreground, so com is the target
    assert abs(com.reshape(-1, 3).mean(0) - [255, 0, 0]).max() < 20


def test_resume_and_overwrite_take_the_spelling_of_predict(tmp_path):
    for spelling, expected in (("--resume", True), ("--resume=true", True), ("--resume=false", False)):
        config, _ = config_from_arguments(["--overwrite", "a.mp4", "--model", "rvm-mobilenetv3", spelling])
        writer = config["predict"]["trainer"]["callbacks"][0]["init_args"]
        assert (writer["resume"], writer["overwrite"]) == (expected, True)


def test_a_mistyped_model_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        cli_main(["matte", "a.mp4", "--model", "rvm-mobilenet"])
    assert stop.value.code == 2
    message = (
        "error: model 'rvm-mobilenet' is not a variant: with a checkpoint, the model is one of ['mattingbase"
    )
    assert message in capsys.readouterr().err


def test_a_bad_target_colour_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        cli_main(["matte", "a.mp4", "--model", "rvm-mobilenetv3", "--target", "#zz0000"])
    assert stop.value.code == 2
    assert (
        "error: matte: --target '#zz0000': invalid colour ('#zz0000'): expected '#RRGGBB'"
        in capsys.readouterr().err
    )


def test_an_unknown_output_is_refused_before_the_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        cli_main(
            ["matte", "a.mp4", "--model", "rvm-mobilenetv3", "--checkpoint", "none", "--outputs", "com,foo"]
        )
    assert stop.value.code == 2
    error = capsys.readouterr().err.splitlines()[0]
    assert error == (
        "error: invalid outputs of VideoWriterCallback ('foo'): expected one of 'com', 'pha', 'fgr', 'err', "
        "'ref', 'seg'"
    )


def test_one_plate_serves_every_input():
    config = predict_config(["a.mp4", "b.mp4"], "mattingrefine-resnet50", backgrounds=["plate.png"])
    assert config["predict"]["data"]["backgrounds"] == ["plate.png", "plate.png"]


def test_presets_resolve_by_name_and_ship_in_the_package():
    names = presets()
    expected = {"demo", "rvm", "bgmv2", "alpha", "image_sequence", "live", "fit_synthetic", "finetune_rvm"}
    assert expected <= set(names)
    assert resolve_config("rvm") == str(names["rvm"]) and names["rvm"].name == "predict_rvm.yaml"
    assert resolve_config("configs/predict_rvm.yaml") in ("configs/predict_rvm.yaml", str(names["rvm"]))
    assert resolve_config("elsewhere/x.yaml") == "elsewhere/x.yaml"
    assert names["rvm"].parent == ROOT / "lightning_matting" / "configs"


def test_a_mistyped_preset_is_named_with_the_presets(capsys):
    with pytest.raises(SystemExit) as stop:
        cli_main(["predict", "--config", "rvmm"])
    assert stop.value.code == 2
    error = capsys.readouterr().err.splitlines()[0]
    assert error.startswith("error: --config 'rvmm' is neither a file nor a packaged preset; the presets: ")
    assert "rvm" in error and "bgmv2" in error


def test_predict_without_a_writer_gets_one_and_makes_no_lightning_logs(
    tmp_path, rvm_weights, monkeypatch, caplog
):
    monkeypatch.chdir(tmp_path)
    write_counter_clip(tmp_path / "clip.mkv", 3)
    cli_main(
        [
            "predict",
            "--model.model=rvm-mobilenetv3",
            f"--model.checkpoint={rvm_weights}",
            "--data.sources=[clip.mkv]",
        ]
    )
    for output in ("com", "pha"):
        assert len(read_video(tmp_path / "outputs" / "clip" / f"{output}.mp4")[0]) == 3
    assert not (tmp_path / "lightning_logs").exists()
    assert "no VideoWriterCallback in trainer.callbacks: writing com and pha to outputs/" in caplog.text


@pytest.mark.slow
def test_the_built_wheel_mattes_from_a_url_then_from_the_cache_outside_the_checkout(tmp_path, rvm_weights):
    """The wheel in a fresh venv (its dependencies from this environment's site-packages, the checkout not on
    the path), run from a temporary folder: `matte` from a URL served on 127.0.0.1, again from the cache with the
    server stopped, and `demo`."""
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels, ROOT],
        check=True,
        capture_output=True,
    )
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=False)
    site = next((environment / "lib").glob("python*/site-packages"))
    dependencies = next(
        Path(p) for p in sys.path if p.endswith("site-packages") and Path(p, "torch").is_dir()
    )
    (site / "dependencies.pth").write_text(f"{dependencies}\n")  # a path entry: its .pth files are not run
    wheel = next(wheels.glob("lightning_matting-*.whl"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", site, wheel],
        check=True,
        capture_output=True,
    )
    work = tmp_path / "work"
    work.mkdir()
    write_counter_clip(work / "clip.mkv", 4)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LIGHTNING_MATTING_OFFLINE")}
    env["TORCH_HOME"] = str(tmp_path / "torch")
    command = [environment / "bin" / "python", "-m", "lightning_matting.cli"]

    def run(*arguments: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*command, *arguments], cwd=work, env=env, capture_output=True, text=True, timeout=300
        )

    located = run("--version")
    assert located.returncode == 0 and located.stdout.strip(), located.stderr[-2000:]
    where = subprocess.run(
        [environment / "bin" / "python", "-c", "import lightning_matting; print(lightning_matting.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert str(site) in where.stdout, where.stdout + where.stderr

    server = Server()
    server.files["/w/rvm_mobilenetv3.pth"] = rvm_weights.read_bytes()
    url = f"{server.url}/w/rvm_mobilenetv3.pth"
    try:
        first = run(
            "matte", "clip.mkv", "--model", "rvm-mobilenetv3", "--checkpoint", url, "--batch-size", "2"
        )
    finally:
        server.stop()
    assert first.returncode == 0, first.stderr[-3000:]
    second = run("matte", "clip.mkv", "--model", "rvm-mobilenetv3", "--checkpoint", url, "--output", "again")
    assert second.returncode == 0, second.stderr[-3000:]
    for folder in ("outputs", "again"):
        for output in ("com", "pha"):
            frames, _, width, height = read_video(work / folder / "clip" / f"{output}.mp4")
            assert (len(frames), width, height) == (4, 64, 48)
    assert "pha: " in first.stdout + first.stderr

    demo = run("demo", "--data.synthetic.frames=4", "--data.synthetic.size=[64, 48]")
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert len(read_video(work / "outputs" / "demo" / "synthetic_000" / "pha.mp4")[0]) == 4
    shutil.rmtree(work / "outputs")
