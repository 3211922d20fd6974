"""Matte metrics: literature definitions, scales, regions, batch/process merging, bad input."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection

from lightning_matting.metrics import (
    MSE,
    SAD,
    ConnectivityError,
    DtSSD,
    GradientError,
    functional,
    unknown_region,
)

IMAGE_METRICS = (SAD, MSE, GradientError, ConnectivityError)
FUNCTIONAL = {
    SAD: functional.sad,
    MSE: functional.mse,
    GradientError: functional.gradient_error,
    ConnectivityError: functional.connectivity_error,
    DtSSD: functional.dtssd,
}


def random_mattes(batch: int, height: int = 12, width: int = 16, seed: int = 0) -> torch.Tensor:
    """Random mattes [B,1,H,W] float64 in [0,1] with exact 0 and 1 regions, like real mattes."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 1, height, width, generator=g, dtype=torch.float64) * 1.4 - 0.2).clamp(0, 1)


def square(size: int = 32, lo: int = 8, hi: int = 24) -> torch.Tensor:
    """A hard-edged opaque square [1,1,size,size]."""
    matte = torch.zeros(1, 1, size, size, dtype=torch.float64)
    matte[..., lo:hi, lo:hi] = 1
    return matte


def blur(matte: torch.Tensor, passes: int) -> torch.Tensor:
    """`passes` 3x3 box blurs with replicated border."""
    for _ in range(passes):
        matte = F.avg_pool2d(F.pad(matte, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return matte


def value(metric_class, *args, **kwargs) -> float:
    metric = metric_class()
    metric.update(*args, **kwargs)
    return float(metric.compute())


# --- reference implementations written from the published definitions (loops, numpy, cv2) ---


def reference_gradient_error(pred: np.ndarray, target: np.ndarray, sigma: float = 1.4) -> float:
    """DIM gradient error of two [H,W] mattes (unscaled): gaussgradient kernel built by loops, cv2.filter2D."""
    half = math.ceil(sigma * math.sqrt(-2 * math.log(math.sqrt(2 * math.pi) * sigma * 1e-2)))
    size = 2 * half + 1

    def gauss(x: float) -> float:
        return math.exp(-(x**2) / (2 * sigma**2)) / (sigma * math.sqrt(2 * math.pi))

    kernel_x = np.zeros((size, size))
    for i in range(size):
        for j in range(size):
            kernel_x[i, j] = gauss(i - half) * (-(j - half) * gauss(j - half) / sigma**2)
    kernel_x /= np.sqrt((kernel_x**2).sum())

    def magnitude(image: np.ndarray) -> np.ndarray:
        gx = cv2.filter2D(image, -1, kernel_x, borderType=cv2.BORDER_REPLICATE)
        gy = cv2.filter2D(image, -1, kernel_x.T, borderType=cv2.BORDER_REPLICATE)
        return np.sqrt(gx**2 + gy**2)

    return float(((magnitude(pred) - magnitude(target)) ** 2).sum())


def reference_connectivity_error(
    pred: np.ndarray, target: np.ndarray, region: np.ndarray | None = None
) -> float:
    """DIM connectivity error of two [H,W] mattes over a bool region (unscaled), following its per-threshold loop."""
    thresholds = [k / 10 for k in range(11)]
    level = -np.ones_like(pred)
    for i in range(1, len(thresholds)):
        common = ((pred >= thresholds[i]) & (target >= thresholds[i])).astype(np.uint8)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(common, connectivity=4)
        omega = np.zeros_like(pred)
        if count > 1:
            omega[labels == 1 + np.argmax(stats[1:, cv2.CC_STAT_AREA])] = 1
        level[(level == -1) & (omega == 0)] = thresholds[i - 1]
    level[level == -1] = 1
    pred_d, target_d = pred - level, target - level
    pred_phi = 1 - pred_d * (pred_d >= 0.15)
    target_phi = 1 - target_d * (target_d >= 0.15)
    error = np.abs(pred_phi - target_phi)
    return float(error.sum() if region is None else error[region].sum())


# --- SAD and MSE ---


def test_sad_and_mse_on_hand_computed_4x4_mattes():
    target = torch.zeros(2, 1, 4, 4)
    pred = torch.zeros(2, 1, 4, 4)
    pred[0, 0, 0, :2] = 0.5  # image 0: |diff| sum 1.0, squared sum 0.5
    pred[1, 0, 3, 3] = 1.0  # image 1: |diff| sum 1.0, squared sum 1.0
    pred[1, 0, 2, 0] = 0.25  # + 0.25 and 0.0625
    assert value(SAD, pred, target) == pytest.approx((1.0 + 1.25) / 2 / 1e3)
    assert value(MSE, pred, target) == pytest.approx((0.5 / 16 + 1.0625 / 16) / 2 * 1e3)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_sad_and_mse_match_numpy_on_random_mattes(dtype):
    batches = [
        (random_mattes(3, seed=s).to(dtype), random_mattes(3, seed=s + 10).to(dtype)) for s in range(2)
    ]
    sad, mse = SAD(), MSE()
    per_image_sad, per_image_mse = [], []
    for pred, target in batches:
        sad.update(pred, target)
        mse.update(pred, target)
        diff = pred.double().numpy() - target.double().numpy()
        per_image_sad += list(np.abs(diff).sum(axis=(1, 2, 3)) / 1e3)
        per_image_mse += list((diff**2).mean(axis=(1, 2, 3)) * 1e3)
    assert float(sad.compute()) == pytest.approx(np.mean(per_image_sad), rel=1e-12)
    assert float(mse.compute()) == pytest.approx(np.mean(per_image_mse), rel=1e-12)
    assert sad.compute().dtype == torch.float64


# --- gradient error ---


def test_gradient_error_matches_dim_definition():
    pred, target = blur(random_mattes(2, 20, 24, seed=1), 1), random_mattes(2, 20, 24, seed=2)
    expected = (
        np.mean(
            [reference_gradient_error(p[0].numpy(), t[0].numpy()) for p, t in zip(pred, target, strict=True)]
        )
        / 1e3
    )
    assert value(GradientError, pred, target) == pytest.approx(expected, rel=1e-9)


def test_gradient_error_zero_for_identical_and_grows_with_blur():
    target = square()
    errors = [value(GradientError, blur(target, passes), target) for passes in range(5)]
    assert errors[0] == 0
    assert all(np.diff(errors) > 0), errors


# --- connectivity error ---


def test_connectivity_error_on_hand_computed_4x4_mattes():
    target = torch.ones(1, 1, 4, 4)
    holed = target.clone()
    holed[0, 0, 1, 2] = 0  # one pixel cut off at every threshold: |phi| = |1 - 0| = 1
    assert value(ConnectivityError, holed, target) == pytest.approx(1 / 1e3)

    target = torch.zeros(1, 1, 4, 4)
    target[..., :2] = 1
    faint = target.clone()
    faint[..., 3] = 0.1  # a faint fragment where the truth is 0: distance 0.1 < theta 0.15, no error
    assert value(ConnectivityError, faint, target) == 0
    assert value(SAD, faint, target) == pytest.approx(0.4 / 1e3)

    fragment = target.clone()
    fragment[..., 3] = 1
    half = target.clone()
    half[..., 3] = 0.5  # fragment disconnected from the largest component: phi 0 vs 0.5 on 4 pixels
    assert value(ConnectivityError, half, fragment) == pytest.approx(4 * 0.5 / 1e3)


def test_connectivity_error_matches_dim_definition():
    pred, target = blur(random_mattes(3, 20, 24, seed=3), 1), blur(random_mattes(3, 20, 24, seed=4), 1)
    expected = np.mean(
        [reference_connectivity_error(p[0].numpy(), t[0].numpy()) for p, t in zip(pred, target, strict=True)]
    )
    assert value(ConnectivityError, pred, target) == pytest.approx(expected / 1e3, rel=1e-12)


def test_connectivity_error_zero_for_identical_and_grows_with_hole_size():
    target = square()
    errors = []
    for hole in range(0, 10, 3):
        pred = target.clone()
        pred[..., 12 : 12 + hole, 12 : 12 + hole] = 0
        errors.append(value(ConnectivityError, pred, target))
    assert errors[0] == 0
    assert all(np.diff(errors) > 0), errors
    assert value(ConnectivityError, blur(target, 2), blur(target, 2)) == 0


# --- region: mask and trimap ---


def test_mask_restricts_the_region_of_every_image_metric():
    pred, target = random_mattes(2, seed=5), random_mattes(2, seed=6)
    mask = torch.zeros_like(pred, dtype=torch.bool)
    mask[..., 2:9, 3:11] = True
    spoiled = torch.where(mask, pred, 1 - pred)  # change pred only outside the region
    for metric_class in (SAD, MSE):
        assert value(metric_class, spoiled, target, mask=mask) == pytest.approx(
            value(metric_class, pred, target, mask=mask), rel=1e-12
        ), metric_class
    diff = (pred - target).numpy()[mask.numpy()].reshape(2, -1)
    assert value(SAD, pred, target, mask=mask) == pytest.approx(np.abs(diff).sum(1).mean() / 1e3)
    assert value(MSE, pred, target, mask=mask) == pytest.approx((diff**2).mean(1).mean() * 1e3)
    # gradients and connected components are taken on the whole image, then summed over the region only
    assert 0 < value(GradientError, pred, target, mask=mask) < value(GradientError, pred, target)
    expected = np.mean(
        [
            reference_connectivity_error(p[0], t[0], m[0])
            for p, t, m in zip(pred.numpy(), target.numpy(), mask.numpy(), strict=True)
        ]
    )
    assert value(ConnectivityError, pred, target, mask=mask) == pytest.approx(expected / 1e3, rel=1e-12)
    assert value(ConnectivityError, pred, target, mask=mask) < value(ConnectivityError, pred, target)


def test_unknown_region_of_a_trimap():
    trimap = torch.tensor([[0, 128], [255, 128]], dtype=torch.uint8)[None, None]
    region = unknown_region(trimap)
    assert region.dtype == torch.bool
    assert region.tolist() == [[[[False, True], [False, True]]]]
    pred = torch.tensor([[0.0, 0.5], [0.0, 0.25]])[None, None]
    assert value(SAD, pred, torch.zeros_like(pred), mask=region) == pytest.approx(0.75 / 1e3)


def test_mse_leaves_out_images_with_an_empty_region_and_sad_counts_them_as_zero():
    pred, target = random_mattes(2, seed=7), random_mattes(2, seed=8)
    mask = torch.ones_like(pred, dtype=torch.bool)
    mask[1] = False
    assert value(MSE, pred, target, mask=mask) == pytest.approx(value(MSE, pred[:1], target[:1]))
    assert value(SAD, pred, target, mask=mask) == pytest.approx(value(SAD, pred[:1], target[:1]) / 2)


# --- dtSSD ---


def test_dtssd_on_a_hand_computed_clip():
    target = torch.tensor([[0.0, 0.0], [0.5, 0.5], [1.0, 1.0]]).reshape(3, 1, 1, 2)
    pred = torch.tensor([[0.0, 0.0], [0.5, 0.7], [1.0, 1.0]]).reshape(3, 1, 1, 2)
    # each transition: derivative error (0, +-0.2) -> sqrt(mean(0, 0.04)) x 1e2
    assert value(DtSSD, pred, target) == pytest.approx(math.sqrt(0.02) * 1e2)


def test_dtssd_zero_for_perfect_and_constant_offset_and_positive_for_flicker():
    clips = random_mattes(2 * 6, seed=9).reshape(2, 6, 1, 12, 16) * 0.8
    assert value(DtSSD, clips, clips) == 0
    assert value(DtSSD, clips + 0.1, clips) == pytest.approx(0, abs=1e-12)
    flicker = clips + 0.1 * (torch.arange(6) % 2).reshape(1, 6, 1, 1, 1)
    assert value(DtSSD, flicker, clips) == pytest.approx(10.0)  # |derivative error| 0.1 everywhere


def test_dtssd_clip_forms_and_chunks_overlapping_by_one_frame():
    target = random_mattes(7, seed=10)
    pred = blur(target, 1)
    whole = value(DtSSD, pred, target)
    assert value(DtSSD, pred[None], target[None]) == pytest.approx(whole, rel=1e-12)
    chunked = DtSSD()
    chunked.update(pred[:3], target[:3])
    chunked.update(pred[2:], target[2:])  # starts with the previous chunk's last frame
    assert float(chunked.compute()) == pytest.approx(whole, rel=1e-12)
    chunked.update(pred[:1], 1 - target[:1])  # a single frame has no transition: nothing changes
    assert float(chunked.compute()) == pytest.approx(whole, rel=1e-12)


# --- merging across batches and processes ---


def batches_for(metric_class) -> list[tuple[torch.Tensor, torch.Tensor]]:
    mattes = [(blur(random_mattes(3, seed=s), 1), random_mattes(3, seed=s + 20)) for s in range(3)]
    if metric_class is DtSSD:
        return [(p[None], t[None]) for p, t in mattes]
    return mattes


@pytest.mark.parametrize("metric_class", [*IMAGE_METRICS, DtSSD])
def test_merged_instances_equal_one_instance_updated_with_all_batches(metric_class):
    batches = batches_for(metric_class)
    everything, first, second = metric_class(), metric_class(), metric_class()
    for pred, target in batches:
        everything.update(pred, target)
    first.update(*batches[0])
    for pred, target in batches[1:]:
        second.update(pred, target)
    first.merge_state(second)
    assert float(first.compute()) == pytest.approx(float(everything.compute()), rel=1e-12)
    assert float(first.compute()) > 0


@pytest.mark.parametrize("metric_class", [*IMAGE_METRICS, DtSSD])
def test_functional_form_equals_the_metric_on_one_batch(metric_class):
    pred, target = batches_for(metric_class)[0]
    kwargs = {}
    if metric_class is not DtSSD:
        kwargs["mask"] = torch.zeros_like(pred, dtype=torch.bool)
        kwargs["mask"][..., 2:10, 3:12] = True
    metric = metric_class()
    metric.update(pred, target, **kwargs)
    result = FUNCTIONAL[metric_class](pred, target, **kwargs)
    assert result.dtype == torch.float64
    assert float(result) > 0
    assert torch.equal(result, metric.compute())


def test_functional_forms_reject_bad_input_as_the_metrics_do():
    with pytest.raises(ValueError, match=r"pred must be a float tensor \[B,1,H,W\].*got ndarray"):
        functional.sad(GOOD.numpy(), GOOD)
    with pytest.raises(ValueError, match=r"mask must be a bool tensor shaped like pred"):
        functional.connectivity_error(GOOD, GOOD, mask=GOOD)
    with pytest.raises(ValueError, match=r"pred must have shape clips \[B,T,1,H,W\]"):
        functional.dtssd(GOOD[0, 0], GOOD[0, 0])


def test_forward_returns_the_batch_value_and_accumulates():
    (pred_a, target_a), (pred_b, target_b) = batches_for(SAD)[:2]
    metric = SAD()
    assert float(metric(pred_a, target_a)) == pytest.approx(value(SAD, pred_a, target_a))
    metric(pred_b, target_b)
    both = value(SAD, torch.cat([pred_a, pred_b]), torch.cat([target_a, target_b]))
    assert float(metric.compute()) == pytest.approx(both)


def test_metric_collection_on_consecutive_frames_keeps_metrics_apart():
    collection = MetricCollection([SAD(), MSE(), GradientError(), ConnectivityError(), DtSSD()])
    frames = random_mattes(4, seed=11)
    # identical first batch: every state is zero, which must not fuse the metrics into one compute group
    collection.update(frames, frames)
    pred, target = blur(random_mattes(4, seed=12), 1), random_mattes(4, seed=13)
    collection.update(pred, target)
    results = collection.compute()
    assert set(results) == {"SAD", "MSE", "GradientError", "ConnectivityError", "DtSSD"}
    for metric_class in IMAGE_METRICS:
        metric = metric_class()
        metric.update(frames, frames)
        metric.update(pred, target)
        assert float(results[metric_class.__name__]) == pytest.approx(float(metric.compute()), rel=1e-12)
    dtssd = DtSSD()
    dtssd.update(frames, frames)
    dtssd.update(pred, target)
    assert float(results["DtSSD"]) == pytest.approx(float(dtssd.compute()), rel=1e-12)


def test_two_metrics_in_one_collection_keep_separate_states():
    collection = MetricCollection([SAD(), GradientError()])
    frames = random_mattes(2, seed=16)
    collection.update(frames, frames)  # both states zero after the first batch: equal, yet not one group
    pred = blur(frames, 1)
    collection.update(pred, frames)
    assert collection.compute_groups == {0: ["SAD"], 1: ["GradientError"]}
    assert float(collection["SAD"].sum_abs_error) == pytest.approx(float((pred - frames).abs().sum()))
    assert float(collection["GradientError"].sum_gradient_error) != float(collection["SAD"].sum_abs_error)
    assert int(collection["SAD"].total) == int(collection["GradientError"].total) == 4
    results = collection.compute()
    assert float(results["SAD"]) == pytest.approx(value(SAD, pred, frames) / 2, rel=1e-12)
    assert float(results["GradientError"]) == pytest.approx(value(GradientError, pred, frames) / 2, rel=1e-12)


def test_metric_collection_passes_the_mask_to_image_metrics():
    pred, target = random_mattes(3, seed=14), random_mattes(3, seed=15)
    mask = torch.zeros_like(pred, dtype=torch.bool)
    mask[..., :6, :] = True
    collection = MetricCollection([SAD(), DtSSD()])
    collection.update(pred, target, mask=mask)
    results = collection.compute()
    assert float(results["SAD"]) == pytest.approx(value(SAD, pred, target, mask=mask))
    assert float(results["DtSSD"]) == pytest.approx(value(DtSSD, pred, target))


# --- bad input ---

GOOD = torch.full((2, 1, 4, 4), 0.5)


@pytest.mark.parametrize(
    ("pred", "target", "match"),
    [
        (GOOD.numpy(), GOOD, r"pred must be a float tensor \[B,1,H,W\].*got ndarray"),
        (GOOD, (GOOD * 255).to(torch.uint8), r"target must be a float tensor \[B,1,H,W\].*torch.uint8"),
        (GOOD[0], GOOD, r"pred must have shape \[B,1,H,W\], one channel; got \(1, 4, 4\)"),
        (
            GOOD,
            GOOD.expand(2, 3, 4, 4),
            r"target must have shape \[B,1,H,W\], one channel; got \(2, 3, 4, 4\)",
        ),
        (GOOD[..., :0], GOOD, r"pred must have shape \[B,1,H,W\]"),
        (GOOD + 0.6, GOOD, r"pred must have values in \[0, 1\]"),
        (GOOD, GOOD - 0.6, r"target must have values in \[0, 1\]"),
        (GOOD, torch.full_like(GOOD, float("nan")), r"target must have values in \[0, 1\] \(no NaN\)"),
        (
            GOOD,
            GOOD[:, :, :3],
            r"pred and target must have the same shape; got \(2, 1, 4, 4\) and \(2, 1, 3, 4\)",
        ),
    ],
)
@pytest.mark.parametrize("metric_class", IMAGE_METRICS)
def test_image_metrics_reject_bad_mattes(metric_class, pred, target, match):
    with pytest.raises(ValueError, match=match):
        metric_class().update(pred, target)


@pytest.mark.parametrize(
    ("mask", "match"),
    [
        (
            torch.ones(2, 1, 4, 4),
            r"mask must be a bool tensor shaped like pred \(2, 1, 4, 4\).*torch.float32",
        ),
        (
            torch.ones(2, 1, 4, 3, dtype=torch.bool),
            r"mask must be a bool tensor.*got torch.bool tensor of shape",
        ),
        (torch.full((2, 1, 4, 4), 128, dtype=torch.uint8), r"mask must be a bool.*unknown_region\(trimap\)"),
    ],
)
def test_image_metrics_reject_bad_masks(mask, match):
    with pytest.raises(ValueError, match=match):
        SAD().update(GOOD, GOOD, mask=mask)


@pytest.mark.parametrize(
    ("pred", "target", "match"),
    [
        (
            GOOD[0, 0],
            GOOD[0, 0],
            r"pred must have shape clips \[B,T,1,H,W\] or consecutive frames \[T,1,H,W\]",
        ),
        (GOOD[None].expand(1, 2, 3, 4, 4), GOOD[None], r"pred must have shape clips \[B,T,1,H,W\]"),
        (GOOD.int(), GOOD, r"pred must be a float tensor clips \[B,T,1,H,W\]"),
        (GOOD, GOOD * 3, r"target must have values in \[0, 1\]"),
        (GOOD[None], GOOD, r"pred and target must have the same shape"),
    ],
)
def test_dtssd_rejects_bad_clips(pred, target, match):
    with pytest.raises(ValueError, match=match):
        DtSSD().update(pred, target)


@pytest.mark.parametrize(
    ("trimap", "match"),
    [
        (torch.zeros(1, 1, 2, 2), r"trimap must be a uint8 tensor \[B,1,H,W\] with values 0, 128, 255"),
        (torch.zeros(1, 2, 2, dtype=torch.uint8), r"trimap must have shape \[B,1,H,W\]; got \(1, 2, 2\)"),
        (torch.full((1, 1, 2, 2), 127, dtype=torch.uint8), r"trimap must hold only the values 0 .*128 .*255"),
    ],
)
def test_unknown_region_rejects_bad_trimaps(trimap, match):
    with pytest.raises(ValueError, match=match):
        unknown_region(trimap)
