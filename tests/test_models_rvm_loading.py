"""RVM through load_model: official state dicts load strictly, wrong checkpoints are named."""

from __future__ import annotations

import pytest
import torch
from test_models_rvm import golden, manifest, recipe

from lightning_matting.models import RobustVideoMatting, load_model


@pytest.fixture(scope="module")
def official_mobilenetv3(tmp_path_factory):
    """A stand-in for rvm_mobilenetv3.pth: a plain state dict with the reference's keys."""
    path = tmp_path_factory.mktemp("ckpt") / "rvm_mobilenetv3.pth"
    torch.save(recipe.reference_weights(manifest("mobilenetv3")), path)
    return path


def test_official_checkpoint_loads_by_name_and_by_path(official_mobilenetv3):
    src = recipe.reference_clip()
    expected = golden("mobilenetv3")["outputs"]["dr05_dgf"]
    for model in (load_model("rvm-mobilenetv3", official_mobilenetv3), load_model(official_mobilenetv3)):
        assert isinstance(model, RobustVideoMatting)
        with torch.no_grad():
            fgr, pha, *_ = model(src, downsample_ratio=0.5)
        torch.testing.assert_close(pha, expected["pha"].float(), atol=2e-3, rtol=0)


def test_fast_guided_filter_drops_the_deep_filter_weights(official_mobilenetv3):
    model = load_model("rvm-mobilenetv3", official_mobilenetv3, refiner="fast_guided_filter")
    with torch.no_grad():
        fgr, pha, *_ = model(recipe.reference_clip(), downsample_ratio=0.5)
    expected = golden("mobilenetv3")["outputs"]["dr05_fgf"]
    torch.testing.assert_close(pha, expected["pha"].float(), atol=2e-3, rtol=0)


def test_wrong_family_checkpoint_is_named(official_mobilenetv3, tmp_path):
    with pytest.raises(ValueError, match=r"does not fit rvm-resnet50:(.|\n)*it looks like rvm-mobilenetv3"):
        load_model("rvm-resnet50", official_mobilenetv3)
    bgmv2 = load_model("mattingbase-mobilenetv2").state_dict()
    torch.save(bgmv2, tmp_path / "pytorch_mobilenetv2.pth")
    with pytest.raises(
        ValueError, match=r"does not fit rvm-mobilenetv3:(.|\n)*it looks like mattingbase-mobilenetv2"
    ):
        load_model("rvm-mobilenetv3", tmp_path / "pytorch_mobilenetv2.pth")


def test_unknown_refiner_is_refused():
    with pytest.raises(
        ValueError,
        match=r"^invalid refiner \('bilateral'\): expected one of 'deep_guided_filter', 'fast_guided_filter'$",
    ):
        load_model("rvm-mobilenetv3", refiner="bilateral")
    with pytest.raises(ValueError, match=r"option\(s\) 'backbone_scale' not accepted by rvm-mobilenetv3"):
        load_model("rvm-mobilenetv3", backbone_scale=0.25)
