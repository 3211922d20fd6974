"""The `lightning-matting` command: a bad input is one paragraph and an exit status; --help, --version; the
callbacks' names in a user's own LightningCLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import read_video
from test_predict import ROOT, run_cli, synthetic_predict_args

import lightning_matting
from lightning_matting.cli import main
from lightning_matting.cli_errors import HINT

SYNTHETIC = [*synthetic_predict_args(2), "--data.synthetic.dir=in"]
WRITER = ["--trainer.callbacks+=VideoWriterCallback", "--trainer.callbacks.output_dir=out"]
YAML_WRITER = """
trainer:
  callbacks:
    - class_path: lightning_matting.callbacks.VideoWriterCallback
      init_args: {output_dir: out, %s}
"""

# (arguments after SYNTHETIC, a YAML config or None, exit status, the parts of the one error line)
BAD_INPUTS = {
    "fps": (
        [*WRITER, "--trainer.callbacks.fps=-5"],
        None,
        2,
        [
            "VideoWriterCallback: invalid fps (-5.0): expected a number > 0 or a fraction like '30000/1001' (frames/s)"
        ],
    ),
    "segment_seconds in YAML": (
        [],
        YAML_WRITER % "segment_seconds: -1",
        2,
        ["VideoWriterCallback: invalid segment_seconds (-1.0): expected a number >= 0"],
    ),
    "outputs": (
        [*WRITER, "--trainer.callbacks.outputs=[]"],
        None,
        2,
        ["VideoWriterCallback: outputs must be a non-empty list", "[]"],
    ),
    "codec": (
        [*WRITER, "--trainer.callbacks.codec=foo"],
        None,
        2,
        [
            "trainer.callbacks.codec: Expected a typing.Literal['h264', 'hevc', 'prores4444', 'vp9', 'ffv1']",
            "foo",
        ],
    ),
    "model variant": (
        ["--model.model=foo", *WRITER],
        None,
        2,
        ["model 'foo'", "'rvm-mobilenetv3'"],
    ),
    "checkpoint": (
        ["--model.checkpoint=missing.pth", *WRITER],
        None,
        2,
        ["checkpoint file not found: missing.pth"],
    ),
    "unknown key in YAML": ([*WRITER], "model:\n  bogus: 1\n", 2, ["does not accept option 'model.bogus'"]),
    "Trainer setting": (
        ["--trainer.devices=0", *WRITER],
        None,
        2,
        ["Trainer(devices='0')", "not a valid input"],
    ),
    "source file": (
        [
            "--data.synthetic.clips=0",
            "--data.sources=[missing.mp4]",
            "--data.backgrounds=[missing.png]",
            *WRITER,
        ],
        None,
        1,
        ["video file not found: missing.mp4"],
    ),
}


def cli_output(args: list[str], capsys) -> tuple[int, str, str]:
    """`lightning-matting *args` in this process: (exit status, stdout, stderr)."""
    try:
        main(args)
        status = 0
    except SystemExit as exit_info:
        status = exit_info.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def run_main(args: list[str], capsys) -> tuple[int, list[str]]:
    """`lightning-matting *args` in this process: (exit status, stderr's lines)."""
    status, _, stderr = cli_output(args, capsys)
    return status, stderr.splitlines()


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_a_bad_input_is_one_error_line_and_its_exit_status(case, tmp_path, monkeypatch, capsys):
    args, config, status, parts = BAD_INPUTS[case]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LIGHTNING_MATTING_DEBUG", raising=False)
    if config is not None:
        (tmp_path / "config.yaml").write_text(config)
        args = [*args, "--config=config.yaml"]
    code, stderr = run_main([*SYNTHETIC, *args], capsys)
    assert code == status and len(stderr) == 2 and stderr[1] == HINT, stderr
    assert stderr[0].startswith("error: ") and all(part in stderr[0] for part in parts), stderr[0]


def test_existing_outputs_are_refused_in_one_line_and_debug_adds_the_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out" / "synthetic_000").mkdir(parents=True)
    (tmp_path / "out" / "synthetic_000" / "pha.mp4").write_bytes(b"")
    args = [*SYNTHETIC, *WRITER, "--trainer.callbacks.outputs=[pha]"]
    code, stderr = run_main(args, capsys)
    assert code == 1 and stderr[1:] == [HINT]
    assert (
        stderr[0].startswith("error: VideoWriterCallback: 1 output(s) exist already")
        and "overwrite" in stderr[0]
    )

    code, debug = run_main([*args, "--debug"], capsys)
    assert code == 1 and debug[0] == "Traceback (most recent call last):" and debug[-1] == stderr[0]
    monkeypatch.setenv("LIGHTNING_MATTING_DEBUG", "1")
    code, debug = run_main([*SYNTHETIC, *WRITER, "--trainer.callbacks.fps=-5"], capsys)
    assert code == 2 and "Does not validate against any of the Union subtypes" in "\n".join(debug)
    assert debug[-1].startswith("error: VideoWriterCallback: invalid fps (-5.0): expected a number > 0")


def test_the_command_prints_only_the_paragraph_lightnings_set_up_lines_held(tmp_path):
    args = [
        "--data.synthetic.clips=0",
        "--data.sources=[missing.mp4]",
        "--data.backgrounds=[missing.png]",
        *WRITER,
    ]
    result = run_cli(*SYNTHETIC, *args, folder=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == ["error: video file not found: missing.mp4", HINT]
    assert not list(tmp_path.iterdir())  # no lightning_logs, no config.yaml


def test_help_describes_the_tool_and_version_prints_it(capsys):
    for args in (["--help"], ["--version"], ["predict", "--help"]):
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        if args == ["--help"]:
            top = " ".join(out.split())
            assert top.startswith("usage: lightning-matting ") and "Video matting (BackgroundMattingV2" in top
            assert (
                "predict matte videos and write the outputs" in top
                and "fit train or fine-tune a model" in top
            )
            assert "matte INPUT... --model NAME" in top and "preset by name: demo, rvm" in top
            assert "--print_config" in top and "--version" in top and "--debug" in top
        elif args == ["--version"]:
            assert out == f"lightning-matting {lightning_matting.__version__}\n"
        else:
            top = " ".join(out.splitlines()[:8])
            assert top.startswith("usage: lightning-matting [options] predict ") and "Matte videos" in top


USER_CLI = """
import json, sys
import lightning as L
import torch
from lightning.pytorch.cli import LightningCLI
from torch.utils.data import DataLoader, TensorDataset
{imports}

class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Conv2d(3, 1, 1)

    def predict_step(self, batch, i):
        return {{"pha": torch.sigmoid(self.net(batch[0]))}}


class TinyData(L.LightningDataModule):
    def predict_dataloader(self):
        return DataLoader(TensorDataset(torch.rand(4, 3, 32, 48)), batch_size=2)


for args in json.loads(sys.argv[1]):
    try:
        LightningCLI(Tiny, TinyData, save_config_callback=None, args=args)
        print("exit 0")
    except SystemExit as exit_info:
        print(f"exit {{exit_info.code}}")
"""


@pytest.mark.parametrize(
    ("imports", "prefix", "short_name_resolves"),
    [
        ("import lightning_matting.callbacks", "", True),
        ("import lightning_matting", "lightning_matting.", False),
    ],
)
def test_the_callbacks_by_name_in_a_users_own_lightning_cli(tmp_path, imports, prefix, short_name_resolves):
    script = tmp_path / "user_cli.py"
    script.write_text(textwrap.dedent(USER_CLI.format(imports=imports)))
    predict = ["predict", "--trainer.logger=false", "--trainer.enable_progress_bar=false"]
    writer = [
        "--trainer.callbacks.output_dir=out",
        "--trainer.callbacks.outputs=[pha]",
        "--trainer.callbacks.fps=25",
    ]
    stages = ["--trainer.callbacks.stages=[{epoch: 0, batch_size: 2}]", "--print_config"]
    runs = [
        [*predict, "--trainer.callbacks+=TrainingStages", *stages],  # only a short name needs the import
        [*predict, f"--trainer.callbacks+={prefix}VideoWriterCallback", *writer],
        [*predict, f"--trainer.callbacks+={prefix}TrainingStages", *stages],
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, str(script), json.dumps(runs)], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    exits = [line for line in result.stdout.splitlines() if line.startswith("exit ")]
    assert exits == [f"exit {0 if short_name_resolves else 2}", "exit 0", "exit 0"], result.stderr[-3000:]
    assert "TrainingStages" in result.stdout and "batch_size: 2" in result.stdout  # the config printed
    frames, fps, width, height = read_video(tmp_path / "out" / "predict_0" / "pha.mp4")
    assert (len(frames), fps, width, height) == (4, 25, 48, 32)
