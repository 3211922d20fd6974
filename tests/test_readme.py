"""The README's examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import read_video

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_block(heading: str) -> str:
    """The first ```python block after `heading` in the README."""
    text = README.read_text()
    section = text[text.index(heading) :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_your_own_model_example(tmp_path, monkeypatch):
    code = readme_block("## Your own model")
    assert len(code.splitlines()) <= 25
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    frames, fps, width, height = read_video(tmp_path / "out" / "predict_0" / "pha.mp4")
    assert (len(frames), fps, width, height) == (16, 25, 96, 64)
    compare = read_video(tmp_path / "out" / "val" / "run_0" / "epoch=0" / "val_0" / "compare.mp4")
    assert (len(compare[0]), compare[2], compare[3]) == (16, 3 * 96, 64)
