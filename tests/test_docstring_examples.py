"""Every `>>>` example in the package's docstrings runs and prints what it shows (doctest)."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "lightning_matting"
MODULES_WITH_EXAMPLES = [
    "lightning_matting.callbacks.live_stream",
    "lightning_matting.callbacks.video_writer",
    "lightning_matting.matte_command",
    "lightning_matting.metrics",
    "lightning_matting.metrics.functional",
    "lightning_matting.metrics.inputs",
    "lightning_matting.module",
]


def test_every_module_with_examples_is_listed():
    found = {
        ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for path in PACKAGE.rglob("*.py")
        if ">>>" in path.read_text()
    }
    assert found == set(MODULES_WITH_EXAMPLES)


@pytest.mark.parametrize("name", MODULES_WITH_EXAMPLES)
def test_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an example that writes files writes them here
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no example"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed (see above)"
