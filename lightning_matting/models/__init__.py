"""Matting networks in plain torch and their loading by variant name."""

from lightning_matting.models.bgmv2 import MattingBase, MattingRefine
from lightning_matting.models.loading import VARIANTS, Variant, build_model, identify_variant, load_model
from lightning_matting.models.rvm import RobustVideoMatting

__all__ = [
    "VARIANTS",
    "MattingBase",
    "MattingRefine",
    "RobustVideoMatting",
    "Variant",
    "build_model",
    "identify_variant",
    "load_model",
]
