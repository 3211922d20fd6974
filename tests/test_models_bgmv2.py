"""BackgroundMattingV2 networks: checkpoint layout, golden outputs of the reference, loading, input checks."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest
import torch
from conftest import load_recipe
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from lightning_matting.models import VARIANTS, MattingBase, MattingRefine, build_model, load_model
from lightning_matting.models.backbones import MobileNetV2, ResNet

DATA = Path(__file__).parent / "data" / "bgmv2"
MANIFEST_VARIANTS = [
    "mattingbase-resnet50",
    "mattingrefine-resnet50",
    "mattingrefine-resnet101",
    "mattingrefine-mobilenetv2",
]
REFINE_MODES = {
    "full": {},
    "sampling": {"refine_sample_pixels": 2000},
    "thresholding": {"refine_threshold": 0.1},
}
GOLDEN_CASES = [("mattingbase-resnet50", "default")] + [
    (variant, mode) for variant in MANIFEST_VARIANTS[1:] for mode in REFINE_MODES
]
TOLERANCE = 2e-3
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


RECIPE = load_recipe(DATA / "reference_recipe.py")


@cache
def manifest(variant: str) -> dict:
    return json.loads((DATA / "manifests" / f"{variant}.json").read_text())


@cache
def reference_weights(variant: str) -> dict:
    return RECIPE.reference_weights(manifest(variant))


@cache
def golden(variant: str) -> dict:
    return torch.load(DATA / "golden" / f"{variant}.pt")


def golden_inputs(variant: str = "mattingrefine-mobilenetv2") -> tuple[torch.Tensor, torch.Tensor]:
    inputs = golden(variant)["inputs"]
    return inputs["src"], inputs["bgr"]


def run(model: nn.Module, src: torch.Tensor, bgr: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        return tuple(model(src, bgr))


def assert_matches_golden(outputs: tuple[torch.Tensor, ...], variant: str, mode: str) -> None:
    expected = golden(variant)["outputs"][mode]
    for (name, want), got in zip(expected.items(), outputs, strict=False):
        assert got.shape == want.shape, name
        error = (got.float() - want.float()).abs().max().item()
        assert error <= TOLERANCE, f"{variant} {mode} {name}: max error {error:.2e}"


def refine_model(variant: str = "mattingrefine-mobilenetv2", mode: str = "sampling") -> nn.Module:
    return load_model(variant, reference_weights(variant), refine_mode=mode, **REFINE_MODES[mode])


# --- layout and numerics -----------------------------------------------------------------------


@pytest.mark.parametrize("variant", MANIFEST_VARIANTS)
def test_state_dict_keys_and_shapes_equal_the_reference_manifest(variant):
    with torch.device("meta"):
        state = build_model(variant).state_dict()
    assert [(key, list(value.shape)) for key, value in state.items()] == list(manifest(variant).items())


@pytest.mark.parametrize(("variant", "mode"), GOLDEN_CASES)
def test_outputs_match_the_reference_golden_outputs(variant, mode):
    options = {} if mode == "default" else {"refine_mode": mode, **REFINE_MODES[mode]}
    model = load_model(variant, reference_weights(variant), **options)
    outputs = run(model, *golden_inputs(variant))
    assert len(outputs) == (4 if mode == "default" else 6)
    assert_matches_golden(outputs, variant, mode)


def test_base_returns_hidden_encoding_at_input_resolution():
    pha, fgr, err, hid = run(
        load_model("mattingbase-mobilenetv2"), torch.rand(1, 3, 30, 46), torch.rand(1, 3, 30, 46)
    )
    assert (pha.shape, fgr.shape, err.shape, hid.shape) == (
        (1, 1, 30, 46),
        (1, 3, 30, 46),
        (1, 1, 30, 46),
        (1, 32, 30, 46),
    )
    assert hid.min() >= 0 and 0 <= pha.min() and pha.max() <= 1


@pytest.mark.parametrize("mode", list(REFINE_MODES))
def test_refiner_with_kernel_size_1_keeps_output_shapes(mode):
    model = load_model(
        "mattingrefine-mobilenetv2", refine_mode=mode, refine_kernel_size=1, backbone_scale=0.5
    )
    pha, fgr, pha_sm, fgr_sm, err_sm, ref_sm = run(model, torch.rand(2, 3, 64, 96), torch.rand(2, 3, 64, 96))
    assert pha.shape == (2, 1, 64, 96) and fgr.shape == (2, 3, 64, 96)
    assert pha_sm.shape == (2, 1, 32, 48) and ref_sm.shape == (2, 1, 16, 24)


def test_sampling_more_pixels_than_the_image_has_refines_every_patch_with_error():
    # 128x160 has 1280 patches; the default 80_000 pixels ask for 5000 (the reference fails here).
    model = load_model("mattingrefine-mobilenetv2", reference_weights("mattingrefine-mobilenetv2"))
    *_, err_sm, ref_sm = run(model, *golden_inputs())
    assert torch.equal(ref_sm.bool(), nn.functional.interpolate(err_sm, size=(32, 40), mode="bilinear") > 0)


def test_refine_options_can_be_changed_after_construction():
    model = refine_model(mode="sampling")
    model.refiner.mode = "full"
    assert_matches_golden(run(model, *golden_inputs()), "mattingrefine-mobilenetv2", "full")


def test_refine_trains_with_gradients_through_patches():
    model = load_model("mattingrefine-mobilenetv2", refine_sample_pixels=640).train()
    pha, fgr, *_ = model(torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64))
    (pha.mean() + fgr.mean()).backward()
    assert (
        model.refiner.conv4.weight.grad is not None and model.backbone.features[0][0].weight.grad is not None
    )


@pytest.mark.parametrize(
    ("encoder", "channels"), [(ResNet, (64, 256, 512, 2048)), (MobileNetV2, (16, 24, 32, 320))]
)
def test_encoders_return_features_at_strides_2_4_8_16(encoder, channels):
    with torch.no_grad():
        features = encoder(in_channels=3).eval()(torch.rand(1, 3, 64, 96))
    assert [tuple(f.shape[1:]) for f in features] == [
        (c, 64 // s, 96 // s) for c, s in zip(channels, (2, 4, 8, 16), strict=True)
    ]


# --- TorchScript and checkpoint formats ------------------------------------------------------------


class _HoistedOptionsWrapper(nn.Module):
    """Like the official TorchScript exports: the network under `model.`, refine options on the top level."""

    def __init__(self, model: MattingRefine) -> None:
        super().__init__()
        self.model = model
        self.backbone_scale = model.backbone_scale
        self.refine_mode = model.refiner.mode
        self.refine_sample_pixels = model.refiner.sample_pixels
        self.refine_threshold = model.refiner.threshold
        self.refine_prevent_oversampling = model.refiner.prevent_oversampling

    def forward(self, src: torch.Tensor, bgr: torch.Tensor):
        self.model.backbone_scale = self.backbone_scale
        self.model.refiner.mode = self.refine_mode
        self.model.refiner.sample_pixels = self.refine_sample_pixels
        self.model.refiner.threshold = self.refine_threshold
        self.model.refiner.prevent_oversampling = self.refine_prevent_oversampling
        return self.model(src, bgr)


def test_torchscript_round_trip_gives_the_same_outputs(tmp_path):
    model = refine_model(mode="sampling")
    path = tmp_path / "scripted.pt"
    torch.jit.script(model).save(str(path))
    loaded = load_model(path)
    assert isinstance(loaded, torch.jit.ScriptModule)
    for got, want in zip(run(loaded, *golden_inputs()), run(model, *golden_inputs()), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert_matches_golden(
        run(load_model(path, refine_mode="full"), *golden_inputs()), "mattingrefine-mobilenetv2", "full"
    )


def test_official_style_torchscript_is_configurable_and_loads_into_our_network(tmp_path):
    path = tmp_path / "torchscript_mobilenetv2_fp32.pth"
    torch.jit.script(_HoistedOptionsWrapper(refine_model(mode="sampling"))).save(str(path))
    scripted = load_model(path, refine_mode="thresholding", refine_threshold=0.1)
    assert scripted.refine_mode == "thresholding"
    assert_matches_golden(run(scripted, *golden_inputs()), "mattingrefine-mobilenetv2", "thresholding")
    plain = load_model("mattingrefine-mobilenetv2", path, refine_mode="full")
    assert isinstance(plain, MattingRefine)
    assert_matches_golden(run(plain, *golden_inputs()), "mattingrefine-mobilenetv2", "full")
    with pytest.raises(ValueError, match="'refine_kernel_size' cannot be changed on TorchScript"):
        load_model(path, refine_kernel_size=1)
    with pytest.raises(
        ValueError, match=r"^invalid refine_mode \('everywhere'\): expected one of 'full', 'sampling'"
    ):
        load_model(path, refine_mode="everywhere")


def test_lightning_checkpoint_round_trip(tmp_path):
    weights = reference_weights("mattingrefine-mobilenetv2")
    path = tmp_path / "last.ckpt"
    state = {"net." + key: value for key, value in weights.items()} | {"loss.weight": torch.ones(1)}
    torch.save(
        {"state_dict": state, "hyper_parameters": {"variant": "mattingrefine-mobilenetv2"}, "epoch": 3}, path
    )
    model = load_model(path, refine_mode="full")
    assert isinstance(model, MattingRefine) and not model.training
    assert_matches_golden(run(model, *golden_inputs()), "mattingrefine-mobilenetv2", "full")
    model = load_model("mattingrefine-mobilenetv2", path, refine_mode="thresholding")
    assert_matches_golden(run(model, *golden_inputs()), "mattingrefine-mobilenetv2", "thresholding")
    with pytest.raises(
        ValueError, match="saved from variant 'mattingrefine-mobilenetv2', not 'mattingbase-resnet50'"
    ):
        load_model("mattingbase-resnet50", path)
    torch.save({"state_dict": state, "hyper_parameters": {"model": "mattingrefine-mobilenetv2"}}, path)
    with pytest.raises(
        ValueError, match="saved from variant 'mattingrefine-mobilenetv2', not 'mattingrefine-resnet50'"
    ):
        load_model("mattingrefine-resnet50", path)


def test_plain_state_dict_file_loads_by_name_or_by_its_keys(tmp_path):
    path = tmp_path / "pytorch_mobilenetv2.pth"
    torch.save(reference_weights("mattingrefine-mobilenetv2"), path)
    model = load_model(path, refine_mode="full")
    assert isinstance(model, MattingRefine)
    assert_matches_golden(run(model, *golden_inputs()), "mattingrefine-mobilenetv2", "full")


def test_variants_listing_names_every_reference_variant():
    assert {
        f"{kind}-{backbone}"
        for kind in ("mattingbase", "mattingrefine")
        for backbone in ("resnet50", "resnet101", "mobilenetv2")
    } <= set(VARIANTS)
    assert isinstance(load_model("mattingbase-mobilenetv2"), MattingBase)


# --- strict loading diagnostics ------------------------------------------------------------------


def test_a_base_checkpoint_loads_into_its_refine_variant_with_an_untrained_refiner():
    base = reference_weights("mattingbase-resnet50")
    with pytest.warns(
        UserWarning,
        match=r"holds a MattingBase: mattingrefine-resnet50 takes its weights and "
        r"starts its refiner untrained",
    ):
        model = load_model("mattingrefine-resnet50", base)
    state = model.state_dict()
    assert all(torch.equal(state[key], value) for key, value in base.items())
    assert sorted({key.split(".")[0] for key in state} - {key.split(".")[0] for key in base}) == ["refiner"]
    with pytest.raises(ValueError, match=r"(?s)missing keys.*looks like mattingbase-resnet50"):
        load_model("mattingrefine-mobilenetv2", base)  # another backbone's base is still refused


def test_refine_checkpoint_into_base_variant_names_the_refine_variant():
    with pytest.raises(ValueError, match=r"(?s)unexpected keys \(20\).*looks like mattingrefine-mobilenetv2"):
        load_model("mattingbase-mobilenetv2", reference_weights("mattingrefine-mobilenetv2"))


def test_garbage_keys_are_listed_and_match_no_variant(tmp_path):
    garbage = {"encoder.weight": torch.rand(3), "head.bias": torch.rand(2)}
    with pytest.raises(
        ValueError,
        match=r"(?s)unexpected keys \(2\): encoder\.weight, head\.bias.*matches none of the known variants",
    ):
        load_model("mattingrefine-mobilenetv2", garbage)
    torch.save(garbage, tmp_path / "garbage.pth")
    with pytest.raises(ValueError, match="cannot tell which variant .* matches none"):
        load_model(tmp_path / "garbage.pth")


def test_wrong_shapes_are_listed_with_both_shapes():
    weights = dict(reference_weights("mattingrefine-mobilenetv2"))
    weights["backbone.features.0.0.weight"] = torch.rand(32, 3, 3, 3)
    expected = (
        r"(?s)wrong shapes \(1\): backbone\.features\.0\.0\.weight: checkpoint \[32, 3, 3, 3\], "
        r"model \[32, 6, 3, 3\].*closest variant: mattingrefine-mobilenetv2"
    )
    with pytest.raises(ValueError, match=expected):
        load_model("mattingrefine-mobilenetv2", weights)


def test_refiner_kernel_size_1_checkpoint_loads_only_with_that_option():
    weights = load_model("mattingrefine-mobilenetv2", refine_kernel_size=1).state_dict()
    model = load_model("mattingrefine-mobilenetv2", weights, refine_kernel_size=1)
    assert model.refiner.conv1.weight.shape == (24, 42, 1, 1)
    with pytest.raises(
        ValueError, match=r"wrong shapes \(4\): refiner\.conv1\.weight: checkpoint \[24, 42, 1, 1\]"
    ):
        load_model("mattingrefine-mobilenetv2", weights)


def test_unreadable_or_foreign_files_raise_clear_errors(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(
        ValueError, match=r"garbage.pth cannot be read: expected a state dict .* damaged, truncated"
    ):
        load_model("mattingbase-resnet50", garbage)
    counters = tmp_path / "counters.pth"
    torch.save({"epoch": 3}, counters)
    with pytest.raises(ValueError, match="is not a state dict: epoch hold no tensors"):
        load_model("mattingbase-resnet50", counters)
    lightning = tmp_path / "empty.ckpt"
    torch.save({"state_dict": {"other.weight": torch.ones(1)}}, lightning)
    with pytest.raises(ValueError, match="without network weights"):
        load_model(lightning)
    with pytest.raises(FileNotFoundError, match="checkpoint file not found"):
        load_model("mattingbase-resnet50", tmp_path / "missing.pth")
    with pytest.raises(FileNotFoundError, match="is neither a variant nor a file: expected one of"):
        load_model("mattingrefine-resnet18")
    with pytest.raises(ValueError, match="is not a variant: with a checkpoint, the model is one of"):
        load_model("mattingrefine-resnet18", counters)


# --- options and input checks --------------------------------------------------------------------


def test_refine_option_for_base_variant_is_refused_naming_where_it_applies():
    with pytest.raises(
        ValueError,
        match="'refine_mode' not accepted by mattingbase-resnet50, whose options are: none; they apply to mattingrefine-",
    ):
        load_model("mattingbase-resnet50", refine_mode="full")


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(
        ValueError,
        match="'sample_pixels' not accepted by mattingrefine-mobilenetv2, whose options are: backbone_scale, refine_mode",
    ):
        load_model("mattingrefine-mobilenetv2", sample_pixels=1000)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("backbone_scale", 0.75, r"^invalid backbone_scale \(0\.75\): expected a number in \(0, 0\.5\]$"),
        (
            "refine_mode",
            "everywhere",
            r"^invalid refine_mode \('everywhere'\): expected one of 'full', 'sampling', 'thresholding'$",
        ),
        ("refine_sample_pixels", 0, r"^invalid refine_sample_pixels \(0\): expected an int >= 1$"),
        ("refine_threshold", 1.5, r"^invalid refine_threshold \(1\.5\): expected a number in \[0, 1\]$"),
        ("refine_kernel_size", 5, r"^invalid refine_kernel_size \(5\): expected one of 1, 3$"),
    ],
)
def test_out_of_range_refine_options_are_refused(option, value, message):
    with pytest.raises(ValueError, match=message):
        load_model("mattingrefine-mobilenetv2", **{option: value})


def test_unknown_backbone_is_refused():
    with pytest.raises(
        ValueError,
        match=r"^invalid backbone \('vgg16'\): expected one of 'resnet50', 'resnet101', 'mobilenetv2'$",
    ):
        MattingBase("vgg16")


@pytest.mark.parametrize(
    ("src_shape", "bgr_shape", "message"),
    [
        (
            (1, 3, 64, 64),
            (1, 3, 64, 68),
            r"bgr must have the same \[B, 3, H, W\] shape as src \[1, 3, 64, 64\], got \[1, 3, 64, 68\]",
        ),
        ((1, 3, 64, 66), (1, 3, 64, 66), "height and width must be divisible by 4, got 64x66"),
        (
            (1, 4, 64, 64),
            (1, 4, 64, 64),
            r"src must be a \[B, 3, H, W\] RGB tensor in \[0, 1\], got shape \[1, 4, 64, 64\]",
        ),
        ((3, 64, 64), (3, 64, 64), r"src must be a \[B, 3, H, W\] RGB tensor"),
    ],
)
def test_bad_inputs_are_refused(src_shape, bgr_shape, message):
    model = load_model("mattingrefine-mobilenetv2")
    with pytest.raises(ValueError, match=message):
        model(torch.rand(src_shape), torch.rand(bgr_shape))


def test_base_refuses_mismatched_background():
    with pytest.raises(ValueError, match="bgr must have the same"):
        load_model("mattingbase-mobilenetv2")(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 16, 16))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_and_truncated_files_always_give_the_clear_error(tmp_path, data):
    """Random bytes, text, and valid checkpoints cut at a random byte: one ValueError naming the path."""
    valid = tmp_path / "valid.pth"
    if not valid.exists():
        torch.save({"w": torch.ones(64, 64)}, valid)
    content = data.draw(
        st.one_of(
            st.binary(max_size=4096),
            st.text(max_size=200).map(str.encode),
            st.integers(0, valid.stat().st_size - 1).map(lambda cut: valid.read_bytes()[:cut]),
            st.just(b"PK\x03\x04" + bytes(64)),  # a zip header and nothing else
        )
    )
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"bad.pth") as error:
        load_model("mattingbase-mobilenetv2", path)
    assert "weights_only=False" not in str(error.value)


def test_eval_sampling_selects_without_a_host_sync_and_as_the_selection_does():
    torch.manual_seed(0)
    model = MattingRefine("mobilenetv2", refine_mode="sampling", refine_sample_pixels=10**9).eval()
    src, bgr = torch.rand(2, 3, 64, 96), torch.rand(2, 3, 64, 96)
    with torch.no_grad(), torch.profiler.profile() as profile:
        sampled = model(src, bgr)
    assert not [event for event in profile.events() if event.name == "aten::nonzero"]  # no device->host sync
    model.refiner.mode, model.refiner.threshold = "thresholding", 0.0  # the same patches: error > 0
    with torch.no_grad():
        selected = model(src, bgr)
    ref = sampled[5]
    assert 0 < ref.mean() < 1  # some patches with error 0 were sampled and kept coarse
    assert torch.equal(ref, selected[5])
    for got, want in zip(sampled, selected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
