"""RobustVideoMatting: official state-dict layout, golden outputs of the reference, recurrence, errors."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
from conftest import load_recipe

from lightning_matting.models.rvm import (
    DeepGuidedFilterRefiner,
    FastGuidedFilterRefiner,
    RobustVideoMatting,
    auto_downsample_ratio,
    rvm_mobilenetv3,
    rvm_resnet50,
)

DATA = Path(__file__).parent / "data" / "rvm"
BUILDERS = {"mobilenetv3": rvm_mobilenetv3, "resnet50": rvm_resnet50}
STATE_NAMES = ["r1", "r2", "r3", "r4"]
# golden case: (refiner, downsample_ratio, segmentation_pass, names of the returned tensors)
GOLDEN_CASES = {
    "dr1_clip": ("deep_guided_filter", 1, False, ["fgr", "pha", *STATE_NAMES]),
    "dr05_dgf": ("deep_guided_filter", 0.5, False, ["fgr", "pha", *STATE_NAMES]),
    "dr05_fgf": ("fast_guided_filter", 0.5, False, ["fgr", "pha"]),
    "seg": ("deep_guided_filter", 1, True, ["seg"]),
}


recipe = load_recipe(DATA / "reference_recipe.py")


@functools.cache
def manifest(variant: str) -> dict[str, list[int]]:
    return json.loads((DATA / f"rvm-{variant}.json").read_text())


@functools.cache
def golden(variant: str) -> dict:
    return torch.load(DATA / f"rvm-{variant}.pt")


@functools.cache
def reference_model(variant: str, refiner: str = "deep_guided_filter") -> RobustVideoMatting:
    """The model with the reference's deterministic weights, loaded strictly, in eval mode."""
    weights = recipe.reference_weights(manifest(variant))
    if refiner == "fast_guided_filter":
        weights = {k: v for k, v in weights.items() if not k.startswith("refiner.")}
    model = BUILDERS[variant](refiner=refiner)
    model.load_state_dict(weights, strict=True)
    return model.eval()


@torch.no_grad()
def run(model: torch.nn.Module, *args, **kwargs) -> list[torch.Tensor]:
    return model(*args, **kwargs)


def stream(model: RobustVideoMatting, clip: torch.Tensor, carry_state: bool, **kwargs) -> list[torch.Tensor]:
    """Feed a clip [B,T,3,H,W] frame by frame; returns fgr, pha stacked over time and the last states."""
    fgrs, phas, states = [], [], [None] * 4
    for frame in clip.unbind(1):
        fgr, pha, *new_states = run(model, frame, *states, **kwargs)
        fgrs.append(fgr)
        phas.append(pha)
        states = new_states if carry_state else [None] * 4
    return [torch.stack(fgrs, 1), torch.stack(phas, 1), *new_states]


@pytest.mark.parametrize("variant", BUILDERS)
def test_state_dict_equals_official_layout(variant: str) -> None:
    expected = manifest(variant)
    state = BUILDERS[variant]().state_dict()
    assert list(state) == list(expected)
    assert {k: list(v.shape) for k, v in state.items()} == expected

    fast = BUILDERS[variant](refiner="fast_guided_filter").state_dict()
    without_refiner = {k: s for k, s in expected.items() if not k.startswith("refiner.")}
    assert len(expected) - len(without_refiner) == 15
    assert {k: list(v.shape) for k, v in fast.items()} == without_refiner


@pytest.mark.parametrize("case", GOLDEN_CASES)
@pytest.mark.parametrize("variant", BUILDERS)
def test_matches_reference_golden_outputs(variant: str, case: str) -> None:
    refiner, ratio, segmentation_pass, names = GOLDEN_CASES[case]
    reference = golden(variant)
    outputs = run(
        reference_model(variant, refiner),
        reference["inputs"]["src"],
        downsample_ratio=ratio,
        segmentation_pass=segmentation_pass,
    )
    for name, output in zip(names, outputs[: len(names)], strict=True):
        expected = reference["outputs"][case][name].float()
        assert output.shape == expected.shape, name
        torch.testing.assert_close(output, expected, atol=2e-3, rtol=0, msg=f"{case} {name}")


@pytest.mark.parametrize("variant", BUILDERS)
def test_whole_clip_equals_frames_with_state_carried(variant: str) -> None:
    model = reference_model(variant)
    clip = recipe.reference_clip()
    whole = run(model, clip, downsample_ratio=0.5)
    streamed = stream(model, clip, carry_state=True, downsample_ratio=0.5)
    assert whole[0].shape == (1, 4, 3, 112, 192) and whole[1].shape == (1, 4, 1, 112, 192)
    for name, a, b in zip(["fgr", "pha", *STATE_NAMES], whole, streamed, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0, msg=name)


def test_resetting_the_state_changes_the_matte() -> None:
    model = reference_model("mobilenetv3")
    clip = recipe.reference_clip()
    carried_pha = run(model, clip)[1]
    reset_pha = stream(model, clip, carry_state=False)[1]
    torch.testing.assert_close(reset_pha[:, 0], carried_pha[:, 0], atol=1e-5, rtol=0)
    for t in range(1, clip.size(1)):
        assert (reset_pha[:, t] - carried_pha[:, t]).abs().max() > 5e-3


def test_downsample_ratio_none_picks_the_automatic_ratio() -> None:
    assert auto_downsample_ratio(1080, 1920) == 512 / 1920
    assert auto_downsample_ratio(112, 192) == 1.0
    model = reference_model("mobilenetv3")
    wide = torch.rand(1, 3, 40, 1024, generator=torch.Generator().manual_seed(0))
    automatic = run(model, wide, downsample_ratio=None)
    explicit = run(model, wide, downsample_ratio=0.5)
    assert automatic[2].shape == (1, 16, 10, 256)  # r1 at 1/2 of the half-size input
    for a, b in zip(automatic, explicit, strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    small = recipe.reference_clip(frames=1)[:, 0]
    automatic, explicit = run(model, small, downsample_ratio=None), run(model, small, downsample_ratio=1)
    for a, b in zip(automatic, explicit, strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


@pytest.mark.parametrize("ratio", [1, 0.5])
def test_any_frame_size_gives_full_size_outputs(ratio: float) -> None:
    src = torch.rand(2, 3, 50, 70, generator=torch.Generator().manual_seed(1))
    fgr, pha, r1, r2, r3, r4 = run(reference_model("mobilenetv3"), src, downsample_ratio=ratio)
    assert fgr.shape == (2, 3, 50, 70) and pha.shape == (2, 1, 50, 70)
    assert 0 <= pha.min() and pha.max() <= 1
    assert r1.shape[0] == 2 and r4.shape[1] == 64


def test_builders_choose_the_refiner() -> None:
    assert isinstance(rvm_mobilenetv3().refiner, DeepGuidedFilterRefiner)
    assert isinstance(rvm_resnet50(refiner="fast_guided_filter").refiner, FastGuidedFilterRefiner)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_torchscript_matches_eager_with_the_official_call_order() -> None:
    model = reference_model("mobilenetv3")
    scripted = torch.jit.script(model)
    src = recipe.reference_clip(frames=2, height=48, width=64)
    eager = run(model, src, None, None, None, None, 0.5)
    fgr, pha, *states = run(scripted, src, None, None, None, None, 0.5)
    for a, b in zip(eager, [fgr, pha, *states], strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert list(scripted.state_dict()) == list(manifest("mobilenetv3"))
    next_step = run(scripted, src[:, 0], *states, 0.5)
    torch.testing.assert_close(next_step[0], run(model, src[:, 0], *states, 0.5)[0], atol=0, rtol=0)


SRC_FORM = r"src must be \[B,3,H,W\] or \[B,T,3,H,W\]"


@pytest.mark.parametrize(
    ("src", "ratio", "message"),
    [
        (torch.rand(3, 16, 16), 1, SRC_FORM),
        (torch.rand(1, 1, 1, 3, 16, 16), 1, SRC_FORM),
        (torch.rand(1, 4, 16, 16), 1, SRC_FORM),
        (torch.rand(1, 2, 1, 16, 16), 1, SRC_FORM),
        (
            torch.rand(1, 3, 16, 16),
            0,
            r"invalid downsample_ratio \(.*\): expected a number in \(0, 1\], or None",
        ),
        (
            torch.rand(1, 3, 16, 16),
            1.5,
            r"invalid downsample_ratio \(.*\): expected a number in \(0, 1\], or None",
        ),
        (
            torch.rand(1, 3, 16, 16),
            -0.25,
            r"invalid downsample_ratio \(.*\): expected a number in \(0, 1\], or None",
        ),
        (
            torch.rand(1, 3, 16, 16),
            float("nan"),
            r"invalid downsample_ratio \(.*\): expected a number in \(0, 1\], or None",
        ),
        (torch.rand(1, 3, 16, 16), 0.05, r"downsample_ratio 0.05 shrinks a 16x16 src below one pixel"),
    ],
)
def test_bad_input_is_rejected(src: torch.Tensor, ratio: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run(reference_model("mobilenetv3"), src, downsample_ratio=ratio)


def test_state_of_another_size_is_rejected() -> None:
    model = reference_model("mobilenetv3")
    frame = torch.rand(1, 3, 32, 48)
    states = run(model, frame, downsample_ratio=0.5)[2:]
    run(model, frame, *states, downsample_ratio=0.5)
    with pytest.raises(ValueError, match=r"r1 must be \[1, 16, 16, 24\] .* got \[1, 16, 8, 12\]"):
        run(model, frame, *states, downsample_ratio=1)
    with pytest.raises(ValueError, match=r"r4 must be \[2, 64, 1, 2\]"):
        run(model, frame.expand(2, -1, -1, -1), None, None, None, states[3], downsample_ratio=0.5)


def test_unknown_variant_or_refiner_is_rejected() -> None:
    with pytest.raises(
        ValueError, match=r"^invalid variant \('resnet101'\): expected one of 'mobilenetv3', 'resnet50'$"
    ):
        RobustVideoMatting("resnet101")
    with pytest.raises(
        ValueError,
        match=r"^invalid refiner \('bilinear'\): expected one of 'deep_guided_filter', 'fast_guided_filter'$",
    ):
        RobustVideoMatting("mobilenetv3", refiner="bilinear")
