"""Training losses: zero when right, hand-computed terms, masks, gradient flow, and bad shapes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lightning_matting.losses import matting_base_loss, matting_refine_loss, rvm_loss

BASE_TERMS = {"pha_l1", "pha_grad", "fgr_l1", "err_mse", "loss"}
REFINE_TERMS = BASE_TERMS | {"pha_sm_l1", "pha_sm_grad", "fgr_sm_l1"}
RVM_TERMS = {"pha_l1", "pha_laplacian", "pha_coherence", "fgr_l1", "fgr_coherence", "loss"}


def ground_truth(
    batch: int = 2, height: int = 16, width: int = 16, seed: int = 0
) -> tuple[torch.Tensor, ...]:
    """(pha [B,1,H,W] with exact 0 and 1 regions, fgr [B,3,H,W]) float64 in [0,1]."""
    g = torch.Generator().manual_seed(seed)
    pha = (torch.rand(batch, 1, height, width, generator=g, dtype=torch.float64) * 1.6 - 0.3).clamp(0, 1)
    fgr = torch.rand(batch, 3, height, width, generator=g, dtype=torch.float64)
    return pha, fgr


def as_floats(terms: dict[str, torch.Tensor]) -> dict[str, float]:
    assert all(value.dim() == 0 for value in terms.values())
    return {name: value.item() for name, value in terms.items()}


def assert_total_is_sum(terms: dict[str, torch.Tensor]) -> None:
    parts = sum(value for name, value in terms.items() if name != "loss")
    assert terms["loss"].item() == pytest.approx(parts.item(), abs=1e-12)


# ---------------------------------------------------------------------------------------------- base loss


def test_base_loss_is_zero_for_perfect_predictions():
    pha, fgr = ground_truth()
    terms = matting_base_loss(pha.clone(), fgr.clone(), torch.zeros_like(pha), pha, fgr)
    assert set(terms) == BASE_TERMS
    assert as_floats(terms) == {name: 0.0 for name in BASE_TERMS}


def test_base_loss_hand_computed_alpha_and_error_terms():
    true_pha = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    fgr = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    pred_pha = torch.full_like(true_pha, 0.5)
    terms = as_floats(matting_base_loss(pred_pha, fgr, torch.zeros_like(true_pha), true_pha, fgr))
    assert terms["pha_l1"] == pytest.approx(0.5)
    assert terms["pha_grad"] == pytest.approx(0.0)  # both flat
    assert terms["fgr_l1"] == 0.0  # alpha is 0 everywhere: the foreground is never compared
    assert terms["err_mse"] == pytest.approx(0.25)  # err 0 against |0.5 - 0|


def test_base_loss_sobel_term_on_a_step_edge():
    """A vertical step 0 -> 1 between columns 3 and 4: the normalised Sobel magnitude is 0.5 at columns 3 and 4
    (sqrt(0.25 + 1e-6)); a flat prediction has sqrt(1e-6) everywhere."""
    true_pha = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    true_pha[..., 4:] = 1
    fgr = torch.zeros(1, 3, 8, 8, dtype=torch.float64)
    pred_pha = torch.zeros_like(true_pha)
    terms = as_floats(matting_base_loss(pred_pha, fgr, true_pha.clone(), true_pha, fgr))
    expected = (math.sqrt(0.25 + 1e-6) - math.sqrt(1e-6)) * 2 / 8
    assert terms["pha_grad"] == pytest.approx(expected, rel=1e-9)
    assert terms["pha_l1"] == pytest.approx(0.5)


def test_base_loss_gradient_term_ignores_a_constant_offset():
    pha, fgr = ground_truth()
    true_pha = pha * 0.8  # room for the offset below 1
    terms = as_floats(matting_base_loss(true_pha + 0.1, fgr, torch.full_like(pha, 0.1), true_pha, fgr))
    assert terms["pha_grad"] == pytest.approx(0.0, abs=1e-12)
    assert terms["pha_l1"] == pytest.approx(0.1)
    assert terms["err_mse"] == pytest.approx(0.0, abs=1e-12)  # err predicted the 0.1 error exactly


def test_base_loss_foreground_counts_only_where_alpha_is_positive():
    true_pha = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    true_pha[..., :, :2] = 0.5  # half the pixels
    true_fgr = torch.full((1, 3, 4, 4), 0.4, dtype=torch.float64)
    wrong_where_transparent = true_fgr.clone()
    wrong_where_transparent[..., :, 2:] = 1.0
    terms = matting_base_loss(
        true_pha, wrong_where_transparent, torch.zeros_like(true_pha), true_pha, true_fgr
    )
    assert float(terms["fgr_l1"]) == 0.0
    off_by_a_fifth = true_fgr + 0.2
    terms = matting_base_loss(true_pha, off_by_a_fifth, torch.zeros_like(true_pha), true_pha, true_fgr)
    assert float(terms["fgr_l1"]) == pytest.approx(0.1)  # 0.2 on half the pixels, mean over all


def test_base_loss_is_positive_and_descends_for_wrong_predictions():
    pha, fgr = ground_truth()
    pred_pha = (1 - pha).requires_grad_()
    pred_fgr = (1 - fgr).requires_grad_()
    pred_err = torch.full_like(pha, 0.5).requires_grad_()
    terms = matting_base_loss(pred_pha, pred_fgr, pred_err, pha, fgr)
    assert all(terms[name].item() > 0 for name in BASE_TERMS)
    assert_total_is_sum(terms)
    terms["loss"].backward()
    with torch.no_grad():
        step = [t - 0.05 * t.grad for t in (pred_pha, pred_fgr, pred_err)]
        assert float(matting_base_loss(*step, pha, fgr)["loss"]) < terms["loss"].item()
    # the L1 gradient points from the truth to the prediction
    sign = torch.sign(pred_pha.detach() - pha)
    assert (torch.sign(pred_pha.grad)[sign != 0] == sign[sign != 0]).float().mean() > 0.9


def test_base_loss_error_target_is_detached():
    pha, fgr = ground_truth()
    pred_pha = (pha * 0.5).requires_grad_()
    pred_err = torch.zeros_like(pha).requires_grad_()
    matting_base_loss(pred_pha, fgr, pred_err, pha, fgr)["err_mse"].backward()
    assert pred_pha.grad is None
    assert torch.count_nonzero(pred_err.grad) > 0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"pred_pha": torch.zeros(2, 1, 8, 9)}, r"pred_pha and pred_fgr must match in all but channels"),
        ({"pred_fgr": torch.zeros(2, 1, 8, 8)}, r"pred_fgr must be \[B,3,H,W\], got \(2, 1, 8, 8\)"),
        ({"pred_pha": torch.zeros(1, 8, 8)}, r"pred_pha must be \[B,1,H,W\], got \(1, 8, 8\)"),
        (
            {"true_pha": torch.zeros(1, 1, 8, 8)},
            r"pred_pha and true_pha must have the same shape, got \(2, 1, 8, 8\)",
        ),
        ({"true_fgr": torch.zeros(2, 3, 4, 4)}, r"pred_fgr and true_fgr must have the same shape"),
        ({"pred_err": torch.zeros(2, 1, 4, 4)}, r"pred_err and pred_pha must have the same shape"),
    ],
)
def test_base_loss_rejects_mismatched_shapes(arguments, message):
    valid = {
        "pred_pha": torch.zeros(2, 1, 8, 8),
        "pred_fgr": torch.zeros(2, 3, 8, 8),
        "pred_err": torch.zeros(2, 1, 8, 8),
        "true_pha": torch.zeros(2, 1, 8, 8),
        "true_fgr": torch.zeros(2, 3, 8, 8),
    }
    with pytest.raises(ValueError, match=message):
        matting_base_loss(**{**valid, **arguments})


# -------------------------------------------------------------------------------------------- refine loss


def refine_inputs(height: int = 32, width: int = 32, scale: int = 4) -> dict[str, torch.Tensor]:
    """Ground truth with a per-image constant alpha (so its bilinear downsample upsamples back exactly) and
    perfect predictions at full and coarse resolution."""
    pha = torch.tensor([0.3, 0.8], dtype=torch.float64).view(2, 1, 1, 1).expand(2, 1, height, width).clone()
    _, fgr = ground_truth(2, height, width)
    small = (height // scale, width // scale)
    fgr_sm = F.interpolate(fgr, size=small, mode="bilinear", align_corners=False)
    return {
        "pha": pha.clone(),
        "fgr": fgr.clone(),
        "pha_sm": pha[..., ::scale, ::scale].clone(),
        "fgr_sm": fgr_sm,
        "err_sm": torch.zeros(2, 1, *small, dtype=torch.float64),
        "true_pha": pha,
        "true_fgr": fgr,
    }


def test_refine_loss_is_zero_for_perfect_predictions():
    terms = matting_refine_loss(**refine_inputs())
    assert set(terms) == REFINE_TERMS
    assert as_floats(terms) == pytest.approx({name: 0.0 for name in REFINE_TERMS}, abs=1e-12)


def test_refine_loss_includes_the_coarse_terms():
    inputs = refine_inputs()
    inputs["pha_sm"] = inputs["pha_sm"] + 0.2
    inputs["fgr_sm"] = (inputs["fgr_sm"] - 0.1).clamp_min(0)
    terms = as_floats(matting_refine_loss(**inputs))
    assert terms["pha_l1"] == 0.0 and terms["fgr_l1"] == 0.0  # the full-resolution output is right
    assert terms["pha_sm_l1"] == pytest.approx(0.2)
    assert terms["pha_sm_grad"] == pytest.approx(0.0, abs=1e-12)  # constant offset
    assert terms["fgr_sm_l1"] > 0.05
    assert terms["err_mse"] == pytest.approx(0.04)  # err_sm 0 against |upsampled pha_sm - true_pha| = 0.2
    assert terms["loss"] == pytest.approx(sum(v for k, v in terms.items() if k != "loss"))


def test_refine_loss_compares_the_coarse_output_with_the_downsampled_truth():
    inputs = refine_inputs()
    true_pha = torch.zeros(2, 1, 32, 32, dtype=torch.float64)
    true_pha[..., 16:, :] = 1  # the bilinear downsample of a step at an 8-pixel boundary is the coarse step
    coarse = torch.zeros(2, 1, 8, 8, dtype=torch.float64)
    coarse[..., 4:, :] = 1
    inputs.update(pha=true_pha.clone(), true_pha=true_pha, pha_sm=coarse)
    terms = as_floats(matting_refine_loss(**inputs))
    assert terms["pha_sm_l1"] == 0.0 and terms["pha_sm_grad"] == pytest.approx(0.0, abs=1e-12)
    assert terms["err_mse"] > 0  # upsampling the coarse step blurs it: err should report that


def test_refine_loss_descends_and_reaches_every_output():
    inputs = refine_inputs()
    wrong = {
        name: (1 - inputs[name]).requires_grad_() for name in ("pha", "fgr", "pha_sm", "fgr_sm", "err_sm")
    }
    terms = matting_refine_loss(**wrong, true_pha=inputs["true_pha"], true_fgr=inputs["true_fgr"])
    assert terms["loss"].item() > 0
    terms["loss"].backward()
    assert all(torch.count_nonzero(tensor.grad) > 0 for tensor in wrong.values())
    with torch.no_grad():
        step = {name: tensor - 0.05 * tensor.grad for name, tensor in wrong.items()}
        after = matting_refine_loss(**step, true_pha=inputs["true_pha"], true_fgr=inputs["true_fgr"])
    assert float(after["loss"]) < terms["loss"].item()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("pha_sm", torch.zeros(2, 1, 8, 9), r"pha_sm and fgr_sm must match in all but channels"),
        (
            "err_sm",
            torch.zeros(2, 1, 4, 4),
            r"err_sm and pha_sm must have the same shape, got \(2, 1, 4, 4\)",
        ),
        ("true_fgr", torch.zeros(2, 3, 16, 16), r"fgr and true_fgr must have the same shape"),
        ("pha_sm", torch.zeros(1, 1, 8, 8), r"pha_sm and fgr_sm must match"),
        ("fgr", torch.zeros(2, 4, 32, 32), r"fgr must be \[B,3,H,W\]"),
    ],
)
def test_refine_loss_rejects_mismatched_shapes(name, value, message):
    inputs = refine_inputs()
    inputs[name] = value.double()
    with pytest.raises(ValueError, match=message):
        matting_refine_loss(**inputs)


def test_refine_loss_rejects_a_coarse_batch_of_another_size():
    inputs = refine_inputs()
    inputs.update(pha_sm=inputs["pha_sm"][:1], fgr_sm=inputs["fgr_sm"][:1], err_sm=inputs["err_sm"][:1])
    with pytest.raises(ValueError, match=r"pha_sm and pha must have the same batch size"):
        matting_refine_loss(**inputs)


# ----------------------------------------------------------------------------------------------- RVM loss


def clip_truth(batch: int = 1, frames: int = 3, size: int = 64, seed: int = 0) -> tuple[torch.Tensor, ...]:
    pha, fgr = ground_truth(batch * frames, size, size, seed)
    return pha.unflatten(0, (batch, frames)), fgr.unflatten(0, (batch, frames))


def test_rvm_loss_is_zero_for_perfect_predictions():
    pha, fgr = clip_truth()
    terms = rvm_loss(pha.clone(), fgr.clone(), pha, fgr)
    assert set(terms) == RVM_TERMS
    assert as_floats(terms) == {name: 0.0 for name in RVM_TERMS}


def test_rvm_laplacian_term_ignores_a_constant_offset():
    pha, fgr = clip_truth()
    true_pha = pha * 0.8
    terms = as_floats(rvm_loss(true_pha + 0.1, fgr, true_pha, fgr))
    assert terms["pha_laplacian"] == pytest.approx(0.0, abs=1e-12)
    assert terms["pha_coherence"] == pytest.approx(0.0, abs=1e-12)  # the same offset in every frame
    assert terms["pha_l1"] == pytest.approx(0.1)


def test_rvm_laplacian_term_on_a_checkerboard():
    """A +-d checkerboard is all in the finest band (the binomial blur removes it); weight 2^0, mean over 5
    levels: d / 5."""
    true_pha = torch.full((1, 1, 1, 64, 64), 0.5, dtype=torch.float64)
    y, x = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    checkerboard = ((x + y) % 2 * 2 - 1).to(torch.float64)
    fgr = torch.zeros(1, 1, 3, 64, 64, dtype=torch.float64)
    terms = as_floats(rvm_loss(true_pha + 0.2 * checkerboard, fgr, true_pha, fgr))
    assert terms["pha_laplacian"] == pytest.approx(0.2 / 5, rel=1e-9)
    assert terms["pha_l1"] == pytest.approx(0.2)


def test_rvm_coherence_terms_hand_computed():
    """Two frames: the prediction's alpha steps by 0.3 between them while the truth holds still ->
    5 x 0.3^2; the foreground likewise where alpha > 0 (half the pixels)."""
    true_pha = torch.zeros(1, 2, 1, 64, 64, dtype=torch.float64)
    true_pha[..., :32] = 1
    true_fgr = torch.full((1, 2, 3, 64, 64), 0.5, dtype=torch.float64)
    pred_pha = true_pha.clone()
    pred_pha[:, 1, ..., :32] = 0.7
    pred_fgr = true_fgr.clone()
    pred_fgr[:, 1] += 0.2
    terms = as_floats(rvm_loss(pred_pha, pred_fgr, true_pha, true_fgr))
    assert terms["pha_coherence"] == pytest.approx(5 * 0.3**2 / 2)  # half the pixels moved
    assert terms["fgr_coherence"] == pytest.approx(5 * 0.2**2 / 2)  # only where alpha > 0
    assert terms["fgr_l1"] == pytest.approx(0.2 / 4)  # one frame of two, half the pixels


def test_rvm_loss_on_single_frames_has_no_coherence_term():
    pha, fgr = clip_truth(batch=2, frames=1)
    terms = as_floats(rvm_loss(1 - pha, 1 - fgr, pha, fgr))
    assert terms["pha_coherence"] == 0.0 and terms["fgr_coherence"] == 0.0
    assert not any(math.isnan(value) for value in terms.values())
    assert terms["loss"] > 0


def test_rvm_loss_descends_for_wrong_predictions():
    pha, fgr = clip_truth(batch=2)
    pred_pha, pred_fgr = (1 - pha).requires_grad_(), (1 - fgr).requires_grad_()
    terms = rvm_loss(pred_pha, pred_fgr, pha, fgr)
    assert all(terms[name].item() > 0 for name in RVM_TERMS)
    assert_total_is_sum(terms)
    terms["loss"].backward()
    with torch.no_grad():
        after = rvm_loss(pred_pha - 0.05 * pred_pha.grad, pred_fgr - 0.05 * pred_fgr.grad, pha, fgr)
    assert float(after["loss"]) < terms["loss"].item()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"pred_pha": torch.zeros(1, 2, 1, 64, 64)}, r"pred_pha and pred_fgr must match in all but channels"),
        ({"pred_fgr": torch.zeros(1, 3, 3, 64)}, r"pred_fgr must be \[B,T,3,H,W\], got \(1, 3, 3, 64\)"),
        ({"true_pha": torch.zeros(1, 3, 1, 64, 32)}, r"pred_pha and true_pha must have the same shape"),
        ({"true_fgr": torch.zeros(3, 3, 64, 64)}, r"pred_fgr and true_fgr must have the same shape"),
    ],
)
def test_rvm_loss_rejects_mismatched_shapes(arguments, message):
    valid = {
        "pred_pha": torch.zeros(1, 3, 1, 64, 64),
        "pred_fgr": torch.zeros(1, 3, 3, 64, 64),
        "true_pha": torch.zeros(1, 3, 1, 64, 64),
        "true_fgr": torch.zeros(1, 3, 3, 64, 64),
    }
    with pytest.raises(ValueError, match=message):
        rvm_loss(**{**valid, **arguments})


def test_rvm_loss_rejects_frames_too_small_for_the_pyramid():
    pha, fgr = torch.zeros(1, 1, 1, 63, 80), torch.zeros(1, 1, 3, 63, 80)
    with pytest.raises(ValueError, match=r"H and W of at least 64 .* got \(63, 80\)"):
        rvm_loss(pha, fgr, pha, fgr)


# ------------------------------------------------------------------------------------- with the real models


def test_losses_take_the_models_outputs_and_reach_their_parameters():
    from lightning_matting.models.bgmv2 import MattingBase, MattingRefine
    from lightning_matting.models.rvm import RobustVideoMatting

    torch.manual_seed(0)
    src, bgr = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    pha, fgr = (t.float() for t in ground_truth(2, 64, 64))
    base = MattingBase("mobilenetv2")
    pred_pha, pred_fgr, pred_err, _ = base(src, bgr)
    matting_base_loss(pred_pha, pred_fgr, pred_err, pha, fgr)["loss"].backward()
    refine = MattingRefine("mobilenetv2", refine_mode="full")
    matting_refine_loss(*refine(src, bgr)[:5], pha, fgr)["loss"].backward()
    assert refine.refiner.conv1.weight.grad is not None
    rvm = RobustVideoMatting("mobilenetv3")
    clip_pha, clip_fgr = clip_truth(batch=1, frames=2)
    pred_fgr, pred_pha, *_ = rvm(torch.rand(1, 2, 3, 64, 64))
    rvm_loss(pred_pha, pred_fgr, clip_pha.float(), clip_fgr.float())["loss"].backward()
    for model in (base, refine, rvm):
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert sum(g is not None and bool(g.abs().sum() > 0) for g in grads) > len(grads) // 2
