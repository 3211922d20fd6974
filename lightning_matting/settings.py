"""The grouped settings of MattingModule: `model.refine` (BGMv2's refiner) and `model.training` (fit).

Each group is a frozen dataclass that checks its fields when made; LightningCLI shows each as nested YAML
(`model: {refine: {mode: full}}`, or `--model.refine.mode=full`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal, TypeVar

from lightning_matting.validators import check_bool, check_choice, check_int, check_number, invalid

RefineMode = Literal["full", "sampling", "thresholding"]
BGMv2Stage = Literal["base", "refine"]


@dataclass(frozen=True)
class RefineSettings:
    """BackgroundMattingV2's refinement (mattingrefine-* variants); None keeps the variant's own setting.

    Args:
        backbone_scale: The scale in (0, 0.5] the backbone runs at (reference: 0.25 for HD, 0.125 for 4K).
        mode: "full" (every pixel), "sampling" (`sample_pixels` pixels) or "thresholding" (patches whose
            error is above `threshold`).
        sample_pixels: Pixels (>= 1) refined per frame in "sampling" (80,000 for HD; 320,000 for 4K).
        threshold: The error in [0, 1] above which a patch is refined in "thresholding".
        kernel_size: The refiner's kernel size: 1 or 3.
        prevent_oversampling: Never refine more pixels than the frame has.

    Raises:
        TypeError: A field of the wrong type, naming it (`model.refine.<field>`).
        ValueError: A field out of its range, naming it.
    """

    backbone_scale: float | None = None
    mode: RefineMode | None = None
    sample_pixels: int | None = None
    threshold: float | None = None
    kernel_size: int | None = None
    prevent_oversampling: bool | None = None

    def __post_init__(self) -> None:
        if self.backbone_scale is not None:
            check_number("model.refine.backbone_scale", self.backbone_scale, above=0, maximum=0.5)
        if self.mode is not None:
            check_choice("model.refine.mode", self.mode, ("full", "sampling", "thresholding"))
        if self.sample_pixels is not None:
            check_int("model.refine.sample_pixels", self.sample_pixels, 1)
        if self.threshold is not None:
            check_number("model.refine.threshold", self.threshold, minimum=0, maximum=1)
        if self.kernel_size is not None:
            check_int("model.refine.kernel_size", self.kernel_size)
            check_choice("model.refine.kernel_size", self.kernel_size, (1, 3))
        if self.prevent_oversampling is not None:
            check_bool("model.refine.prevent_oversampling", self.prevent_oversampling)

    def model_options(self) -> dict[str, Any]:
        """The settings given (not None) as `load_model` options: {"refine_mode": "full", ...}."""
        options = {
            "backbone_scale": self.backbone_scale,
            "refine_mode": self.mode,
            "refine_sample_pixels": self.sample_pixels,
            "refine_threshold": self.threshold,
            "refine_kernel_size": self.kernel_size,
            "refine_prevent_oversampling": self.prevent_oversampling,
        }
        return {name: value for name, value in options.items() if value is not None}


@dataclass(frozen=True)
class TrainingSettings:
    """What `fit` trains and at which rates (Adam); `TrainingStages` can change them within a fit.

    Args:
        stage: BGMv2: "base" trains the base network alone at the input size with MattingBase's losses (the
            reference's train_base.py; a MattingRefine's refiner is left as it is), "refine" the whole
            MattingRefine with its losses (train_refine.py); None: what the network is.
        learning_rate: Adam's learning rate (>= 0) of the decoder (and ASPP).
        backbone_learning_rate: Adam's learning rate (>= 0) of the backbone.
        refiner_learning_rate: Adam's learning rate (>= 0) of the refiner (BGMv2's MattingRefine, RVM's guided
            filter); None: `learning_rate`.
        high_res_downsample_ratio: RVM: the scale in (0, 1] its encoder runs at in the high-resolution
            training pass (batches {"low": ..., "high": ...} from a datamodule given `data.high_res.size`),
            which trains the refiner; the reference's 0.25.

    Raises:
        TypeError: A field of the wrong type, naming it (`model.training.<field>`).
        ValueError: A field out of its range, naming it.
    """

    stage: BGMv2Stage | None = None
    learning_rate: float = 5e-4
    backbone_learning_rate: float = 1e-4
    refiner_learning_rate: float | None = None
    high_res_downsample_ratio: float = 0.25

    def __post_init__(self) -> None:
        if self.stage is not None:
            check_choice("model.training.stage", self.stage, ("base", "refine"))
        check_number("model.training.learning_rate", self.learning_rate, minimum=0)
        check_number("model.training.backbone_learning_rate", self.backbone_learning_rate, minimum=0)
        if self.refiner_learning_rate is not None:
            check_number("model.training.refiner_learning_rate", self.refiner_learning_rate, minimum=0)
        check_number(
            "model.training.high_res_downsample_ratio", self.high_res_downsample_ratio, above=0, maximum=1
        )


Settings = TypeVar("Settings", RefineSettings, TrainingSettings)


def settings_from(name: str, value: Any, kind: type[Settings]) -> Settings:
    """`value` if it is a `kind`, or the `kind` of a mapping of its fields (a checkpoint's hyperparameters hold
    the groups as mappings, plain data that loads without pickled classes).

    Raises:
        TypeError: Neither, or a mapping with unknown fields, naming `name`.
    """
    if isinstance(value, kind):
        return value
    expected = f"a {kind.__name__} or a mapping of its fields ({', '.join(f.name for f in fields(kind))})"
    if not isinstance(value, Mapping) or not set(value) <= {f.name for f in fields(kind)}:
        raise TypeError(invalid(name, value, expected))
    return kind(**value)
