"""augment_sample: the compositing identity, determinism, shared clip parameters, bounded plate misalignment,
colour jitter semantics, background recovery, and bad input."""

from __future__ import annotations

import pytest
import torch

from lightning_matting.data.augmentation import augment_sample

STILL = {"shift": 0.0, "scale": 0.0, "color_jitter": (0.0, 0.0, 0.0, 0.0), "bgr_misalignment": (0.0, 0.0)}


def make_sample(
    height: int = 48, width: int = 64, frames: int | None = None, seed: int = 0, dtype=torch.float32
) -> dict:
    """A composite with exact 0/1 and soft alpha; "bgr" is the plate, equal to the background behind."""
    g = torch.Generator().manual_seed(seed)
    lead = () if frames is None else (frames,)
    pha = (torch.rand(*lead, 1, height, width, generator=g, dtype=dtype) * 1.6 - 0.3).clamp(0, 1)
    fgr = torch.rand(*lead, 3, height, width, generator=g, dtype=dtype)
    scene = torch.rand(*lead, 3, height, width, generator=g, dtype=dtype)
    return {"src": fgr * pha + scene * (1 - pha), "bgr": scene.clone(), "pha": pha, "fgr": fgr}


def ramps(height: int = 48, width: int = 64, frames: int | None = None) -> torch.Tensor:
    """[3,H,W] (or [T,3,H,W]): channel 0 = x / (W-1), 1 = y / (H-1), 2 = 0.5."""
    y, x = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    image = torch.stack([x / (width - 1), y / (height - 1), torch.full((height, width), 0.5)]).float()
    return image if frames is None else image.expand(frames, -1, -1, -1).clone()


def composite_error(out: dict) -> float:
    return (out["src"] - (out["fgr"] * out["pha"] + out["scene_bgr"] * (1 - out["pha"]))).abs().max().item()


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------- the composite holds


@pytest.mark.parametrize("frames", [None, 4])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_src_is_the_composite_of_the_augmented_layers(frames, seed):
    out = augment_sample(make_sample(frames=frames, seed=seed), seeded(seed))
    assert composite_error(out) < 1e-5


def test_strong_augmentation_keeps_the_composite_and_the_ranges():
    strong = {
        "shift": 0.5,
        "scale": 0.5,
        "color_jitter": (1.0, 1.0, 1.0, 0.5),
        "bgr_misalignment": (0.2, 30.0),
    }
    for seed in range(5):
        out = augment_sample(make_sample(seed=seed), seeded(seed), **strong)
        assert composite_error(out) < 1e-5
        for key in ("src", "bgr", "pha", "fgr", "scene_bgr"):
            assert 0 <= out[key].min() and out[key].max() <= 1, key


def test_shapes_dtypes_and_extra_keys_are_kept():
    for frames, dtype in ((None, torch.float32), (3, torch.float64)):
        sample = {**make_sample(frames=frames, dtype=dtype), "index": 7, "video": "clip"}
        out = augment_sample(sample, seeded(0))
        assert out["index"] == 7 and out["video"] == "clip"
        for key in ("src", "bgr", "pha", "fgr"):
            assert out[key].shape == sample[key].shape and out[key].dtype == dtype, key
        assert out["scene_bgr"].shape == sample["bgr"].shape and out["scene_bgr"].dtype == dtype


def test_the_input_sample_is_left_unchanged():
    sample = make_sample()
    before = {key: value.clone() for key, value in sample.items()}
    augment_sample(sample, seeded(0))
    assert all(torch.equal(sample[key], before[key]) for key in before)


def test_no_augmentation_returns_the_sample():
    sample = make_sample()
    out = augment_sample(sample, seeded(0), **STILL)
    for key in ("src", "bgr", "pha", "fgr"):
        torch.testing.assert_close(out[key], sample[key], atol=1e-5, rtol=0)
    torch.testing.assert_close(out["scene_bgr"], sample["bgr"], atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------------------------- randomness


def test_the_same_seed_gives_the_same_sample_and_other_seeds_differ():
    sample = make_sample()
    first = augment_sample(sample, seeded(3))
    again = augment_sample(sample, seeded(3))
    other = augment_sample(sample, seeded(4))
    for key in ("src", "bgr", "pha", "fgr", "scene_bgr"):
        assert torch.equal(first[key], again[key]), key
        assert not torch.equal(first[key], other[key]), key


def test_the_generator_advances_so_successive_calls_differ():
    sample, generator = make_sample(), seeded(0)
    first, second = augment_sample(sample, generator), augment_sample(sample, generator)
    assert not torch.equal(first["src"], second["src"])


def test_a_clip_gets_the_same_parameters_in_every_frame():
    frame = make_sample()
    clip = {key: value.expand(5, -1, -1, -1) for key, value in frame.items()}
    out = augment_sample(clip, seeded(11))
    single = augment_sample(frame, seeded(11))
    for key in ("src", "bgr", "pha", "fgr", "scene_bgr"):
        for t in range(5):
            torch.testing.assert_close(out[key][t], single[key], atol=1e-6, rtol=0)


def test_distinct_frames_of_a_clip_move_and_misalign_alike():
    """Without contrast (whose pivot is the clip's mean), each frame of a clip is augmented exactly as that
    frame alone with the same seed."""
    options = {"color_jitter": (0.2, 0.0, 0.2, 0.05), "bgr_misalignment": (0.05, 3.0)}
    clip = make_sample(frames=3, seed=5)
    out = augment_sample(clip, seeded(2), **options)
    for t in range(3):
        single = augment_sample({key: value[t] for key, value in clip.items()}, seeded(2), **options)
        for key in ("src", "bgr", "pha", "fgr", "scene_bgr"):
            torch.testing.assert_close(out[key][t], single[key], atol=1e-6, rtol=0)


def test_with_vary_a_clip_drifts_smoothly_from_one_draw_to_another():
    frame = {**make_sample(), "bgr": ramps(), "pha": torch.zeros(1, 48, 64)}
    frame["pha"][:, 16:32, 24:40] = 1.0  # an opaque square: its centroid shows the motion
    frame["src"] = frame["fgr"] * frame["pha"] + frame["bgr"] * (1 - frame["pha"])
    clip = {key: value.expand(9, -1, -1, -1).clone() for key, value in frame.items()}
    options = {
        "shift": 0.2,
        "scale": 0.0,
        "color_jitter": (0.3, 0.0, 0.0, 0.0),
        "bgr_misalignment": (0.0, 0.0),
    }
    out = augment_sample(clip, seeded(4), vary=True, **options)
    assert composite_error(out) < 1e-5  # the identity holds in every frame
    centroids = torch.stack([alpha_centroid(out["pha"][t]) for t in range(9)])
    steps = (centroids[1:] - centroids[:-1]).norm(dim=1)
    path = (centroids[-1] - centroids[0]).norm()
    assert path > 2  # it moved (pixels), smoothly: no jump, slow at both ends (ease in and out)
    assert steps.max() < 0.4 * path and steps[0] < steps[4] and steps[-1] < steps[4]
    brightness = out["scene_bgr"].mean(dim=(1, 2, 3))
    assert (brightness[1:] - brightness[:-1]).abs().max() < (
        brightness[-1] - brightness[0]
    ).abs() * 0.4 + 1e-6
    torch.testing.assert_close(  # the first frame is the single-frame augmentation of the first draw
        out["src"][0], augment_sample(frame, seeded(4), **options)["src"], atol=1e-5, rtol=0
    )


def test_with_vary_the_plate_misalignment_stays_one_draw():
    plate = ramps()
    clip = {"src": plate, "bgr": plate.clone(), "pha": torch.zeros(1, 48, 64), "fgr": plate.clone()}
    clip = {key: value.expand(5, -1, -1, -1).clone() for key, value in clip.items()}
    options = {**STILL, "bgr_misalignment": (0.05, 3.0)}
    out = augment_sample(clip, seeded(9), vary=True, **options)
    for t in range(1, 5):  # no motion, no jitter: only the misalignment, the same in every frame
        torch.testing.assert_close(out["bgr"][t], out["bgr"][0], atol=1e-6, rtol=0)


def test_a_shadow_darkens_the_background_behind_but_not_the_plate():
    sample = {**make_sample(), "pha": torch.zeros(1, 48, 64)}
    sample["pha"][:, 12:36, 20:44] = 1.0
    sample["src"] = sample["fgr"] * sample["pha"] + sample["bgr"] * (1 - sample["pha"])
    sample["scene_bgr"] = sample["bgr"].clone()
    darker = []
    for seed in range(6):
        out = augment_sample(sample, seeded(seed), **{**STILL, "shadow": 1.0})
        assert composite_error(out) < 1e-5
        torch.testing.assert_close(out["bgr"], sample["bgr"])  # the plate was shot without the subject
        scene, before = out["scene_bgr"], sample["bgr"]
        assert (scene <= before + 1e-5).all() and (scene >= 0.7 * before - 1e-5).all()  # darkened, by <= 30%
        darker.append(float((sample["bgr"] - out["scene_bgr"]).sum()))
    assert min(darker) >= 0 and max(darker) > 1  # some shadow is visible
    torch.testing.assert_close(
        augment_sample(sample, seeded(0), **{**STILL, "shadow": 0.0})["scene_bgr"], sample["bgr"]
    )


def test_noise_is_drawn_separately_for_the_background_behind_and_the_plate():
    sample = {key: torch.full_like(value, 0.5) for key, value in make_sample().items()}
    out = augment_sample(sample, seeded(3), **{**STILL, "noise": 0.05})
    assert composite_error(out) < 1e-5
    scene_noise, plate_noise = out["scene_bgr"] - 0.5, out["bgr"] - 0.5
    assert 0 < float(scene_noise.std()) <= 0.05 * 1.1 and 0 < float(plate_noise.std()) <= 0.05 * 1.1
    assert abs(float((scene_noise * plate_noise).mean())) < 0.1 * float(scene_noise.std() * plate_noise.std())


# -------------------------------------------------------------------------------------------------- geometry


def alpha_centroid(pha: torch.Tensor) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(pha.shape[-2]), torch.arange(pha.shape[-1]), indexing="ij")
    weight = pha[0] / pha[0].sum()
    return torch.stack([(weight * x).sum(), (weight * y).sum()])


def test_shift_moves_every_layer_by_a_bounded_amount():
    sample = make_sample(64, 64)
    square = torch.zeros(1, 64, 64)
    square[:, 24:40, 24:40] = 1
    sample.update(pha=square, src=sample["fgr"] * square + sample["bgr"] * (1 - square))
    moves = []
    for seed in range(8):
        out = augment_sample(sample, seeded(seed), **{**STILL, "shift": 0.1})
        move = alpha_centroid(out["pha"]) - alpha_centroid(square)
        assert move.abs().max() <= 0.1 * 64 + 1e-3
        moves.append(move.abs().max().item())
        # the background moved with the subject: the ramp's value at the square's centre moved alike
        ramp_out = augment_sample({**sample, "bgr": ramps(64, 64)}, seeded(seed), **{**STILL, "shift": 0.1})
        x_ramp_move = (ramp_out["scene_bgr"][0, 32, 32] - ramps(64, 64)[0, 32, 32]) * 63
        assert x_ramp_move.item() == pytest.approx(-move[0].item(), abs=0.05)
    assert max(moves) > 1


def test_zoom_scales_the_subject_within_bounds():
    square = torch.zeros(1, 64, 64)
    square[:, 16:48, 16:48] = 1
    sample = {
        "src": square.expand(3, -1, -1),
        "bgr": torch.zeros(3, 64, 64),
        "pha": square,
        "fgr": torch.ones(3, 64, 64),
    }
    areas = [
        augment_sample(sample, seeded(s), **{**STILL, "scale": 0.2})["pha"].sum().item() for s in range(8)
    ]
    assert all(32**2 * 0.8**2 - 1 <= area <= 32**2 * 1.2**2 + 1 for area in areas)
    assert max(areas) - min(areas) > 50


@pytest.mark.parametrize("frames", [None, 2])
def test_plate_misalignment_is_bounded_and_relative_to_the_background_behind(frames):
    """Ramps: the plate's value minus the background's is the misalignment's displacement / (size - 1); a shift
    of up to 3% and a rotation of up to 2 degrees bound it, away from the reflected border."""
    height, width, shift, degrees = 48, 64, 0.03, 2.0
    sample = make_sample(height, width, frames)
    background = ramps(height, width, frames)
    sample.update(
        bgr=background,
        scene_bgr=background,
        src=sample["fgr"] * sample["pha"] + background * (1 - sample["pha"]),
    )
    options = {"shift": 0.05, "scale": 0.05, "color_jitter": (0.0, 0.0, 0.0, 0.0)}
    max_radius = (height**2 + width**2) ** 0.5 / 2
    bound_px = shift * max(height, width) + max_radius * torch.deg2rad(torch.tensor(degrees)).item()
    interior = (..., slice(height // 4, -height // 4), slice(width // 4, -width // 4))
    largest = 0.0
    for seed in range(10):
        aligned = augment_sample(sample, seeded(seed), **options, bgr_misalignment=(0.0, 0.0))
        assert torch.equal(aligned["bgr"], aligned["scene_bgr"])
        out = augment_sample(sample, seeded(seed), **options, bgr_misalignment=(shift, degrees))
        torch.testing.assert_close(out["scene_bgr"], aligned["scene_bgr"])  # only the plate moves
        difference = (out["bgr"] - out["scene_bgr"])[interior]
        displacement_x = difference[..., 0, :, :].abs().max().item() * (width - 1)
        displacement_y = difference[..., 1, :, :].abs().max().item() * (height - 1)
        assert max(displacement_x, displacement_y) <= bound_px / 0.95 + 0.01  # zoom out to 0.95 enlarges it
        largest = max(largest, displacement_x, displacement_y)
    assert largest > 0.5  # it did move


def plate_over_ramps(height: int = 48, width: int = 64, seed: int = 0, **options) -> tuple[torch.Tensor, ...]:
    """Where each interior plate pixel comes from in the background behind, in pixels: (x, y, and the pixel
    grid's x, y), from ramps that give a pixel's coordinates as its value."""
    background = ramps(height, width)
    sample = make_sample(height, width)
    sample.update(
        bgr=background,
        scene_bgr=background,
        src=sample["fgr"] * sample["pha"] + background * (1 - sample["pha"]),
    )
    out = augment_sample(sample, seeded(seed), **{**STILL, **options})
    inner = (slice(height // 4, -height // 4), slice(width // 4, -width // 4))
    y, x = torch.meshgrid(torch.arange(height).float(), torch.arange(width).float(), indexing="ij")
    source_x = out["bgr"][0][inner].flatten() * (width - 1)
    source_y = out["bgr"][1][inner].flatten() * (height - 1)
    return source_x, source_y, x[inner].flatten(), y[inner].flatten()


def test_plate_shift_alone_is_one_bounded_translation():
    for seed in range(5):
        source_x, source_y, x, y = plate_over_ramps(seed=seed, bgr_misalignment=(0.03, 0.0))
        dx, dy = source_x - x, source_y - y
        assert dx.std() < 1e-3 and dy.std() < 1e-3  # the same displacement everywhere
        assert dx.abs().max() <= 0.03 * 64 + 1e-3 and dy.abs().max() <= 0.03 * 48 + 1e-3


def test_plate_misalignment_is_rigid_on_non_square_frames():
    """The plate's rotation is a rotation in pixels (no shear from the 4:3 frame)."""
    source_x, source_y, x, y = plate_over_ramps(bgr_misalignment=(0.02, 10.0))
    design = torch.stack([x, y, torch.ones_like(x)], dim=1)
    fit_x = torch.linalg.lstsq(design, source_x[:, None]).solution.flatten()
    fit_y = torch.linalg.lstsq(design, source_y[:, None]).solution.flatten()
    linear = torch.stack([fit_x[:2], fit_y[:2]])
    torch.testing.assert_close(linear @ linear.T, torch.eye(2), atol=1e-4, rtol=0)
    assert torch.linalg.det(linear).item() == pytest.approx(1.0, abs=1e-4)
    assert abs(linear[0, 1].item()) > 0.01  # it did rotate


# ---------------------------------------------------------------------------------------------------- colour


def test_brightness_scales_foreground_and_background_by_separate_factors():
    sample = make_sample()
    out = augment_sample(sample, seeded(1), **{**STILL, "color_jitter": (0.3, 0.0, 0.0, 0.0)})

    def gain(before, after):
        usable = (before > 0.1) & (after < 0.95)
        ratios = after[usable] / before[usable]
        assert ratios.max() - ratios.min() < 1e-4  # one factor for the whole layer
        assert 0.7 - 1e-6 <= ratios.mean() <= 1.3 + 1e-6
        return ratios.mean().item()

    fgr_gain = gain(sample["fgr"], out["fgr"])
    scene_gain = gain(sample["bgr"], out["scene_bgr"])
    assert gain(sample["bgr"], out["bgr"]) == pytest.approx(
        scene_gain
    )  # the plate is recoloured like the scene
    assert fgr_gain != pytest.approx(scene_gain)


def test_saturation_and_hue_keep_grey_grey():
    sample = make_sample()
    grey = sample["fgr"].mean(dim=0, keepdim=True).expand(3, -1, -1)
    sample.update(fgr=grey, src=grey * sample["pha"] + sample["bgr"] * (1 - sample["pha"]))
    out = augment_sample(sample, seeded(0), **{**STILL, "color_jitter": (0.0, 0.0, 1.0, 0.5)})
    torch.testing.assert_close(out["fgr"], grey, atol=1e-5, rtol=0)
    assert (out["scene_bgr"] - sample["bgr"]).abs().max() > 0.05  # coloured pixels did change


def test_colour_jitter_changes_fgr_and_background_but_not_alpha():
    sample = make_sample()
    out = augment_sample(sample, seeded(0), **{**STILL, "color_jitter": (0.15, 0.15, 0.15, 0.05)})
    assert (
        torch.equal(out["pha"], sample["pha"].clamp(0, 1)) or (out["pha"] - sample["pha"]).abs().max() < 1e-6
    )
    assert (out["fgr"] - sample["fgr"]).abs().max() > 0.01
    assert (out["scene_bgr"] - sample["bgr"]).abs().max() > 0.01


# ------------------------------------------------------------------------------------ the background behind


def test_the_background_behind_is_recovered_from_src_when_not_given():
    """src was filmed over a background that is not the plate (a relit scene): where the subject lets it show,
    augment_sample keeps that background, and the plate stays the plate."""
    sample = make_sample()
    filmed = (sample["bgr"] * 0.8 + 0.1).clamp(0, 1)
    sample["src"] = sample["fgr"] * sample["pha"] + filmed * (1 - sample["pha"])
    out = augment_sample(sample, seeded(0), **STILL)
    shows = sample["pha"].expand(3, -1, -1) < 0.98
    torch.testing.assert_close(out["scene_bgr"][shows], filmed[shows], atol=1e-4, rtol=0)
    torch.testing.assert_close(
        out["src"], sample["src"], atol=3e-3, rtol=0
    )  # hidden: at most 2% shows through
    torch.testing.assert_close(out["bgr"], sample["bgr"], atol=1e-5, rtol=0)


def test_a_given_background_behind_is_used():
    sample = make_sample()
    filmed = 1 - sample["bgr"]
    sample.update(scene_bgr=filmed, src=sample["fgr"] * sample["pha"] + filmed * (1 - sample["pha"]))
    out = augment_sample(sample, seeded(0), **STILL)
    torch.testing.assert_close(out["scene_bgr"], filmed, atol=1e-5, rtol=0)
    torch.testing.assert_close(out["src"], sample["src"], atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pha": None}, r"sample must have keys \['bgr', 'fgr', 'pha', 'src'\].*missing \['pha'\]"),
        (
            {"fgr": torch.zeros(1, 48, 64)},
            r"sample\['fgr'\] must be \[3,H,W\] or \[T,3,H,W\] .* got \(1, 48, 64\)",
        ),
        (
            {"bgr": torch.zeros(3, 48, 32)},
            r"sample\['bgr'\] must be .*same T, H, W as sample\['pha'\] \(1, 48, 64\)",
        ),
        ({"src": torch.zeros(3, 48, 64, dtype=torch.uint8)}, r"sample\['src'\] must be a float tensor"),
        ({"src": torch.zeros(48, 64)}, r"sample\['src'\] must be a float tensor \[3,H,W\] or \[T,3,H,W\]"),
        ({"src": torch.zeros(2, 3, 48, 64)}, r"sample\['src'\] must be .* with the same T, H, W"),
        ({"scene_bgr": torch.zeros(1, 48, 64)}, r"sample\['scene_bgr'\] must be \[3,H,W\]"),
        ({"fgr": [[0.5]]}, r"sample\['fgr'\] must be a float tensor"),
    ],
)
def test_bad_samples_are_rejected(change, message):
    sample = {**make_sample(), **change}
    sample = {key: value for key, value in sample.items() if value is not None}
    with pytest.raises(ValueError, match=message):
        augment_sample(sample, seeded(0))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"shift": -0.1}, r"^invalid shift \(-0\.1\): expected a number in \[0, 1\)$"),
        ({"scale": 1.0}, r"^invalid scale \(1\.0\): expected a number in \[0, 1\)$"),
        (
            {"color_jitter": (0.1, 0.1, 0.1)},
            r"color_jitter must be \(brightness, contrast, saturation, hue\)",
        ),
        ({"color_jitter": (0.1, 0.1, 0.1, 0.6)}, r"hue in \[0, 0.5\], got \(0.1, 0.1, 0.1, 0.6\)"),
        ({"color_jitter": (1.5, 0.1, 0.1, 0.1)}, r"color_jitter must be"),
        (
            {"bgr_misalignment": (0.01,)},
            r"bgr_misalignment must be \(shift in \[0, 1\), degrees in \[0, 180\]\)",
        ),
        ({"bgr_misalignment": (0.01, -1.0)}, r"bgr_misalignment must be .* got \(0.01, -1.0\)"),
        ({"shadow": 1.5}, r"^invalid shadow \(1\.5\): expected a number in \[0, 1\]$"),
        ({"noise": -0.01}, r"^invalid noise \(-0\.01\): expected a number in \[0, 1\)$"),
    ],
)
def test_bad_options_are_rejected(options, message):
    with pytest.raises(ValueError, match=message):
        augment_sample(make_sample(), seeded(0), **options)
