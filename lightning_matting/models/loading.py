"""Build networks by variant name and load checkpoints strictly, naming what a mismatched checkpoint is.

Checkpoints: plain state dicts (the official `.pth` files), Lightning checkpoints of MattingModule
(`state_dict` with keys under `net.`; the variant name in `hyper_parameters['variant']` or
`hyper_parameters['model']`) and TorchScript files (keys under `model.`); "official" or an http(s) URL
is downloaded first (`lightning_matting.models.weights`). Each variant's expected keys come from building
it on the meta device.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn

from lightning_matting.models.bgmv2 import MattingBase, MattingRefine
from lightning_matting.models.rvm import rvm_mobilenetv3, rvm_resnet50
from lightning_matting.models.weights import is_remote, resolve_checkpoint
from lightning_matting.validators import check_choice

Checkpoint = str | os.PathLike | Mapping[str, Tensor]


@dataclass(frozen=True)
class Variant:
    """A named network: `build(**options)` returns it; `options` are the keyword names it accepts.

    `unused_weights(options)` names a key prefix of the official checkpoint that a model built with
    these options has no use for (dropped before the strict check), or None.
    """

    build: Callable[..., nn.Module]
    options: tuple[str, ...] = ()
    unused_weights: Callable[[Mapping[str, Any]], str | None] = lambda options: None


def _rvm_unused_weights(options: Mapping[str, Any]) -> str | None:
    """The fast guided filter has no parameters: an official checkpoint's deep guided filter goes unused."""
    return "refiner." if options.get("refiner") == "fast_guided_filter" else None


BGMV2_REFINE_OPTIONS = (
    "backbone_scale",
    "refine_mode",
    "refine_sample_pixels",
    "refine_threshold",
    "refine_kernel_size",
    "refine_prevent_oversampling",
)

RVM_OPTIONS = ("refiner",)

VariantName = Literal[
    "mattingbase-resnet50",
    "mattingbase-resnet101",
    "mattingbase-mobilenetv2",
    "mattingrefine-resnet50",
    "mattingrefine-resnet101",
    "mattingrefine-mobilenetv2",
    "rvm-mobilenetv3",
    "rvm-resnet50",
]
VARIANTS: Mapping[str, Variant] = MappingProxyType(
    {
        "mattingbase-resnet50": Variant(partial(MattingBase, "resnet50")),
        "mattingbase-resnet101": Variant(partial(MattingBase, "resnet101")),
        "mattingbase-mobilenetv2": Variant(partial(MattingBase, "mobilenetv2")),
        "mattingrefine-resnet50": Variant(partial(MattingRefine, "resnet50"), BGMV2_REFINE_OPTIONS),
        "mattingrefine-resnet101": Variant(partial(MattingRefine, "resnet101"), BGMV2_REFINE_OPTIONS),
        "mattingrefine-mobilenetv2": Variant(partial(MattingRefine, "mobilenetv2"), BGMV2_REFINE_OPTIONS),
        "rvm-mobilenetv3": Variant(rvm_mobilenetv3, RVM_OPTIONS, _rvm_unused_weights),
        "rvm-resnet50": Variant(rvm_resnet50, RVM_OPTIONS, _rvm_unused_weights),
    }
)

# Where an option lives on a loaded TorchScript model: the official exports hoist the refine options
# to the top level; a scripted MattingRefine of ours keeps them on its refiner.
_SCRIPT_ATTRIBUTES = {
    "backbone_scale": ("backbone_scale",),
    "refine_mode": ("refine_mode", "refiner.mode"),
    "refine_sample_pixels": ("refine_sample_pixels", "refiner.sample_pixels"),
    "refine_threshold": ("refine_threshold", "refiner.threshold"),
    "refine_prevent_oversampling": ("refine_prevent_oversampling", "refiner.prevent_oversampling"),
}
_LIST_LIMIT = 8


class _Loaded(NamedTuple):
    state_dict: dict[str, Tensor]
    variant: str | None  # as recorded in a Lightning checkpoint's hyper_parameters
    script: torch.jit.ScriptModule | None
    source: str  # for messages


def load_model(
    variant_or_path: str | os.PathLike, checkpoint: Checkpoint | None = None, **options: Any
) -> nn.Module:
    """Build a variant (see `VARIANTS`) and load `checkpoint` strictly; returns the model in eval mode.

    One exception, as the reference's train_refine.py starts: a MattingBase checkpoint loads into the
    MattingRefine of the same backbone, whose refiner then starts untrained (a warning says so).

    `load_model("mattingrefine-resnet50", "pytorch_resnet50.pth", refine_mode="full")`;
    `load_model("rvm-mobilenetv3", "official")` downloads the official checkpoint on first use. Without a
    checkpoint the weights are freshly initialised. `load_model(path)` reads the variant from a
    Lightning checkpoint's hyper_parameters or from the state dict's keys, and returns a TorchScript
    file as the loaded ScriptModule (called the same way, options set as its attributes). Given a
    variant, a TorchScript file's weights are loaded into our own network instead.

    Args:
        variant_or_path: A variant name (`VARIANTS`), or a checkpoint or TorchScript file to read it from.
        checkpoint: A state dict (.pth) or its path, a Lightning checkpoint or a TorchScript export;
            "official" (the variant's official checkpoint, `OFFICIAL_WEIGHTS`) or an http(s) URL, downloaded
            into torch hub's cache folder on first use.
        **options: The variant's options (backbone_scale, refine_mode, ...).

    Returns:
        The network, in eval mode.

    Raises:
        ValueError: An unknown variant or option, or a checkpoint that does not fit (missing, unexpected or
            mis-shaped keys listed, the variant it looks like named) or cannot be read (its path named).
        FileNotFoundError: The checkpoint file does not exist (offline: it is not in the cache).
        DownloadError: Downloading "official" or a URL failed (the message says where to put the file).
    """
    if isinstance(variant_or_path, str) and variant_or_path in VARIANTS:
        variant: str | None = variant_or_path
    elif checkpoint is not None:
        raise ValueError(
            f"model {str(variant_or_path)!r} is not a variant: with a checkpoint, the model is one of "
            f"{sorted(VARIANTS)}"
        )
    elif not Path(variant_or_path).is_file():
        raise FileNotFoundError(
            f"model {str(variant_or_path)!r} is neither a variant nor a file: expected one of {sorted(VARIANTS)} "
            "or a checkpoint or TorchScript file"
        )
    else:
        variant, checkpoint = None, variant_or_path
    if checkpoint is None:
        return build_model(variant, **options).eval()
    if is_remote(checkpoint):
        checkpoint = resolve_checkpoint(checkpoint, variant)

    loaded = _read_checkpoint(checkpoint)
    if variant is None and loaded.script is not None:
        return _configure_script(loaded, options).eval()
    if variant is None:
        variant = loaded.variant or identify_variant(loaded.state_dict)
        if variant is None:
            raise ValueError(
                f"cannot tell which variant {loaded.source} holds ({_closest_description(loaded.state_dict)}); "
                f"pass one of {sorted(VARIANTS)} as variant_or_path"
            )
    model = build_model(variant, **options)
    state_dict = loaded.state_dict
    if _holds_base_of(loaded, variant):
        state_dict = _with_fresh_refiner(state_dict, model, variant, loaded.source)
    elif loaded.variant is not None and loaded.variant != variant:
        raise ValueError(f"{loaded.source} was saved from variant {loaded.variant!r}, not {variant!r}")
    unused = VARIANTS[variant].unused_weights(options)
    if unused is not None:
        state_dict = {key: value for key, value in state_dict.items() if not key.startswith(unused)}
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    _check_fits(state_dict, expected, variant, loaded.source)
    model.load_state_dict(state_dict)
    return model.eval()


def build_model(variant: str, **options: Any) -> nn.Module:
    """A freshly initialised network of `variant` with `options`; unknown or foreign options raise ValueError."""
    check_choice("variant", variant, sorted(VARIANTS))
    accepted = VARIANTS[variant].options
    foreign = [name for name in options if name not in accepted]
    if foreign:
        owners = sorted({v for v, spec in VARIANTS.items() for name in foreign if name in spec.options})
        where = f"; they apply to {', '.join(owners)}" if owners else ""
        raise ValueError(
            f"option(s) {', '.join(map(repr, foreign))} not accepted by {variant}, "
            f"whose options are: {', '.join(accepted) or 'none'}{where}"
        )
    return VARIANTS[variant].build(**options)


@cache
def expected_shapes(variant: str) -> Mapping[str, tuple[int, ...]]:
    """State-dict keys of `variant` (default options) in order, with their shapes."""
    with torch.device("meta"):
        model = VARIANTS[variant].build()
    return MappingProxyType({key: tuple(value.shape) for key, value in model.state_dict().items()})


def _holds_base_of(loaded: _Loaded, variant: str) -> bool:
    """Whether `loaded` holds the MattingBase of the MattingRefine `variant` (same backbone)."""
    if not variant.startswith("mattingrefine-"):
        return False
    base = variant.replace("mattingrefine-", "mattingbase-")
    return (loaded.variant or identify_variant(loaded.state_dict)) == base


def _with_fresh_refiner(
    state_dict: dict[str, Tensor], model: nn.Module, variant: str, source: str
) -> dict[str, Tensor]:
    """A MattingBase state dict completed with `model`'s freshly initialised refiner."""
    warnings.warn(
        f"{source} holds a MattingBase: {variant} takes its weights and starts its refiner untrained; "
        "train it (MattingModule(bgmv2_stage='refine')) before predicting with it",
        stacklevel=3,
    )
    refiner = {key: value for key, value in model.state_dict().items() if key.startswith("refiner.")}
    return {**state_dict, **refiner}


def identify_variant(state_dict: Mapping[str, Tensor]) -> str | None:
    """The variant whose keys and shapes `state_dict` matches exactly, or None."""
    shapes = {key: tuple(value.shape) for key, value in state_dict.items()}
    return next((name for name in VARIANTS if dict(expected_shapes(name)) == shapes), None)


def _check_fits(
    state_dict: Mapping[str, Tensor], expected: Mapping[str, tuple[int, ...]], variant: str, source: str
) -> None:
    """Raise ValueError listing missing, unexpected and mis-shaped keys, and naming what `state_dict` looks like."""
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    wrong = [
        f"{key}: checkpoint {list(state_dict[key].shape)}, model {list(shape)}"
        for key, shape in expected.items()
        if key in state_dict and tuple(state_dict[key].shape) != shape
    ]
    if not (missing or unexpected or wrong):
        return
    lines = [f"{source} does not fit {variant}:"]
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong)):
        if items:
            lines.append(f"  {label} ({len(items)}): {_shorten(items)}")
    match = identify_variant(state_dict)
    lines.append(f"it looks like {match}" if match else _closest_description(state_dict))
    raise ValueError("\n".join(lines))


def _shorten(items: list[str]) -> str:
    shown = ", ".join(items[:_LIST_LIMIT])
    return shown + (f", ... (+{len(items) - _LIST_LIMIT} more)" if len(items) > _LIST_LIMIT else "")


def _closest_description(state_dict: Mapping[str, Tensor]) -> str:
    shapes = {key: tuple(value.shape) for key, value in state_dict.items()}

    def fitting(name: str) -> int:
        return sum(shapes.get(key) == shape for key, shape in expected_shapes(name).items())

    best = max(VARIANTS, key=fitting)
    if fitting(best) == 0:
        return "it matches none of the known variants"
    return f"closest variant: {best} ({fitting(best)} of {len(expected_shapes(best))} keys fit)"


def _read_checkpoint(checkpoint: Checkpoint) -> _Loaded:
    if isinstance(checkpoint, Mapping):
        return _from_mapping(checkpoint, "the given state dict")
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        if _is_torchscript(path):
            with warnings.catch_warnings():  # torch >= 2.9 deprecates TorchScript; official exports use it
                warnings.simplefilter("ignore", DeprecationWarning)
                script = torch.jit.load(str(path), map_location="cpu")
            return _Loaded(
                _strip_prefix(dict(script.state_dict()), "model."), None, script, f"TorchScript {path}"
            )
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any decoder failure means the same thing to the user
        # torch's own message suggests weights_only=False, which would run arbitrary code from a bad file
        raise ValueError(
            f"checkpoint {path} cannot be read: expected a state dict (.pth/.pt), a Lightning checkpoint "
            f"(.ckpt) or a TorchScript export; the file is damaged, truncated or of another kind "
            f"({type(error).__name__})"
        ) from error
    return _from_mapping(content, f"checkpoint {path}")


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def _from_mapping(content: object, source: str) -> _Loaded:
    if not isinstance(content, Mapping):
        raise ValueError(
            f"{source} holds a {type(content).__name__}, expected a state dict (a dict of tensors)"
        )
    variant = None
    if isinstance(content.get("state_dict"), Mapping):  # Lightning checkpoint of MattingModule
        hyper_parameters = content.get("hyper_parameters") or {}
        names = (hyper_parameters.get(key) for key in ("variant", "model"))
        variant = next((name for name in names if isinstance(name, str) and name in VARIANTS), None)
        content = {
            key[len("net.") :]: value
            for key, value in content["state_dict"].items()
            if key.startswith("net.")
        }
        if not content:
            raise ValueError(
                f"{source} is a Lightning checkpoint without network weights (keys under 'net.')"
            )
    not_tensors = [key for key, value in content.items() if not isinstance(value, Tensor)]
    if not_tensors:
        raise ValueError(f"{source} is not a state dict: {_shorten(not_tensors)} hold no tensors")
    return _Loaded(_strip_prefix(dict(content), "model."), variant, None, source)


def _strip_prefix(state_dict: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    if state_dict and all(key.startswith(prefix) for key in state_dict):
        return {key[len(prefix) :]: value for key, value in state_dict.items()}
    return state_dict


def _configure_script(loaded: _Loaded, options: Mapping[str, Any]) -> torch.jit.ScriptModule:
    """Set `options` as attributes of the TorchScript model, after validating them against its variant."""
    script = loaded.script
    if not options:
        return script
    variant = identify_variant(loaded.state_dict)
    if variant is None:
        raise ValueError(f"cannot apply options to {loaded.source}: it matches no known variant")
    with torch.device("meta"):
        build_model(variant, **options)  # validates names and values
    for name, value in options.items():
        owner, attribute = _find_attribute(script, _SCRIPT_ATTRIBUTES.get(name, ()))
        if owner is None:
            raise ValueError(f"option {name!r} cannot be changed on {loaded.source}")
        setattr(owner, attribute, type(getattr(owner, attribute))(value))
    return script


def _find_attribute(module: nn.Module, paths: tuple[str, ...]) -> tuple[Any, str]:
    for path in paths:
        *parents, attribute = path.split(".")
        owner: Any = module
        for parent in parents:
            owner = getattr(owner, parent, None)
        if owner is not None and hasattr(owner, attribute):
            return owner, attribute
    return None, ""
