"""Datasets of frames: one source with its plate and target, several sources end to end, synthetic clips."""

from __future__ import annotations

import numbers
import re
import warnings
from collections.abc import Sequence
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import ConcatDataset, Dataset

from lightning_matting.data.alignment import align_background
from lightning_matting.data.augmentation import augment_sample
from lightning_matting.data.readers import (
    IMAGE_EXTENSIONS,
    FrameReader,
    VideoInfo,
    decode_image,
    float_to_frame,
    frame_to_float,
    frame_to_uint8,
    open_reader,
    to_fraction,
)
from lightning_matting.data.synthetic import SyntheticScene
from lightning_matting.full_scale import FULL_SCALE
from lightning_matting.validators import check_int, check_size, invalid

ASPECT_TOLERANCE = 0.01  # relative difference of width/height ratios still called "the same aspect ratio"


def parse_colour(value: str | Sequence[float]) -> tuple[float, float, float]:
    """'#RRGGBB' or three numbers in [0,1] -> (r, g, b) floats in [0,1].

    Raises:
        TypeError: Neither a string nor three numbers.
        ValueError: A string not '#RRGGBB', or a number outside [0, 1].
    """
    expected = "'#RRGGBB' (hex) or three numbers in [0, 1]"
    if isinstance(value, str):
        if not re.fullmatch(r"#[0-9a-fA-F]{6}", value.strip()):
            raise ValueError(invalid("colour", value, expected))
        digits = value.strip()[1:]
        return tuple(int(digits[i : i + 2], 16) / FULL_SCALE[torch.uint8] for i in (0, 2, 4))  # type: ignore[return-value]
    if (
        not isinstance(value, Sequence)
        or len(value) != 3
        or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value)
    ):
        raise TypeError(invalid("colour", value, expected))
    if not all(0 <= v <= 1 for v in value):
        raise ValueError(invalid("colour", value, expected))
    return tuple(float(v) for v in value)  # type: ignore[return-value]


def check_resize(resize: Sequence[int] | None, label: str = "resize") -> tuple[int, int] | None:
    """None, or (width, height) as two ints >= 1 (see `check_size`); `label` names the argument in the error."""
    return None if resize is None else check_size(label, resize)


def unique_names(names: Sequence[str]) -> list[str]:
    """The names with repeats made distinct, in order: ['a', 'a', 'a_2'] -> ['a', 'a_2', 'a_2_2']."""
    taken: set[str] = set()
    result = []
    for name in names:
        candidate, copy = name, 1
        while candidate in taken:
            copy += 1
            candidate = f"{name}_{copy}"
        taken.add(candidate)
        result.append(candidate)
    return result


def resize_frame(frame: Tensor, width: int, height: int) -> Tensor:
    """A frame [C,H,W] or frames [N,C,H,W], float in [0,1], resized to (width, height): bilinear,
    antialiased when shrinking."""
    if frame.shape[-2:] == (height, width):
        return frame
    batch = frame if frame.dim() == 4 else frame[None]
    resized = F.interpolate(batch, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return (resized if frame.dim() == 4 else resized[0]).clamp_(0, 1)


def _is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.is_dir()


class MattingVideoDataset(Dataset[dict[str, Any]]):
    """Frames of one source (video file or image folder) with its background plate and composite target.

    Item i: {"src": [3,H,W], "bgr": [3,H,W] (only with a plate), "tgt": [3,H,W] (only with a target),
    "aligned": bool (only with `align`), "index": i, "video": name}; tensors RGB as their file decodes (see
    `FrameReader.read`): uint8 in [0, 255] from 8-bit files, so that DataLoader workers pass a quarter of the
    bytes of float32, and uint16 in [0, 65535] from deeper ones (10-bit video, 16-bit PNG/TIFF), so that
    nothing is truncated to 8 bits (MattingModule, or `collate_frames`, turns either into floats in [0,1]).
    A frame at the output size is the decoded frame as it is; a frame that is resized (or a plate that is
    aligned) is processed in float and rounded once to its own sample type. A still plate or target (image
    or colour) is one tensor shared by every item, which `collate_frames` sends once per batch.

    Size policy: frames come out at `resize` (width, height) if given, else at the source's size; the
    source is resized to it whatever its aspect ratio. The plate must have the source's aspect ratio (within
    1%) and is resized to the output size; any other plate raises ValueError before reading starts. The
    target (image or video) is stretched to the output size. A plate video needs at least as many frames as
    the source (extra frames are ignored); a target video loops when shorter and is cut when longer.

    `background` and `target` are paths: an image file is one still frame, a video file or an image folder
    is a frame per source frame. `target` may also be a colour: '#RRGGBB' or (r, g, b) floats in [0,1]
    (rounded to uint8). `fps` is the frame rate of an image-folder source (videos carry their own). `name`
    defaults to the source's file stem or folder name.

    With `align`, the plate is warped onto each source frame (see `align_background`). Where that fails the
    unaligned plate is used, the item's "aligned" is False (so a consumer can count fallbacks, also with
    DataLoader workers) and a warning is issued once per video and process.
    """

    def __init__(
        self,
        source: str | Path,
        background: str | Path | None = None,
        *,
        target: str | Path | Sequence[float] | None = None,
        resize: Sequence[int] | None = None,
        align: bool = False,
        fps: float | str | Fraction = 30,
        name: str | None = None,
    ) -> None:
        size = check_resize(resize)
        if align and background is None:
            raise ValueError("align=True needs a background plate to align")
        self.source: FrameReader = open_reader(source, fps=fps, name=name)
        src_info = self.source.info
        width, height = size or (src_info.width, src_info.height)
        source_file = str(source) if Path(source).is_file() else None
        self.info = replace(src_info, width=width, height=height, source=source_file)
        self.align = align
        self._plate: Tensor | None = None
        self._plate_reader: FrameReader | None = None
        if background is not None:
            self._open_background(Path(background))
        self._target_frame: Tensor | None = None
        self._target_reader: FrameReader | None = None
        if target is not None:
            self._open_target(target)

    def _open_background(self, path: Path) -> None:
        if _is_image_file(path):
            plate = decode_image(path)
            plate_width, plate_height = plate.shape[2], plate.shape[1]
        else:
            self._plate_reader = open_reader(path, fps=self.info.fps)
            plate_width, plate_height = self._plate_reader.info.width, self._plate_reader.info.height
            if len(self._plate_reader) < len(self):
                raise ValueError(
                    f"background video {path} has {len(self._plate_reader)} frames but source "
                    f"{self.info.name!r} has {len(self)}: a plate video needs a frame per source frame"
                )
        src = self.source.info
        plate_aspect, src_aspect = plate_width / plate_height, src.width / src.height
        if abs(plate_aspect - src_aspect) > ASPECT_TOLERANCE * src_aspect:
            raise ValueError(
                f"background {path} is {plate_width}x{plate_height} (aspect {plate_aspect:.3f}) but source "
                f"{self.info.name!r} is {src.width}x{src.height} (aspect {src_aspect:.3f}); give a plate with "
                f"the source's aspect ratio (it is then resized to {self.info.width}x{self.info.height})"
            )
        if self._plate_reader is None:
            self._plate = self._at_output_size(plate)

    def _open_target(self, target: str | Path | Sequence[float]) -> None:
        if (isinstance(target, Sequence) and not isinstance(target, str)) or str(target).startswith("#"):
            colour = frame_to_uint8(torch.tensor(parse_colour(target)))  # type: ignore[arg-type]
            self._target_frame = (
                colour[:, None, None].expand(3, self.info.height, self.info.width).contiguous()
            )
            return
        path = Path(target)
        if not path.exists():
            raise FileNotFoundError(
                f"target {str(target)!r} is neither a colour ('#RRGGBB' or three floats in [0,1]) nor an "
                "existing image, video or image folder"
            )
        if _is_image_file(path):
            self._target_frame = self._at_output_size(decode_image(path))
        else:
            self._target_reader = open_reader(path, fps=self.info.fps)

    def _at_output_size(self, frame: Tensor) -> Tensor:
        """A decoded [3,h,w] frame (uint8 or uint16) at the output size: itself if it has that size, else
        resized and rounded to its sample type."""
        if frame.shape[1:] == (self.info.height, self.info.width):
            return frame
        resized = resize_frame(frame_to_float(frame), self.info.width, self.info.height)
        return float_to_frame(resized, frame.dtype)

    @property
    def videos(self) -> list[VideoInfo]:
        """The one video this dataset yields, at output size."""
        return [self.info]

    def __len__(self) -> int:
        return self.info.num_frames

    def __getitem__(self, index: int) -> dict[str, Any]:
        src = self._at_output_size(self.source.read(index))
        item: dict[str, Any] = {"src": src}
        if self._plate is not None or self._plate_reader is not None:
            bgr = (
                self._plate
                if self._plate_reader is None
                else self._at_output_size(self._plate_reader.read(index))
            )
            if self.align:
                warped, aligned = align_background(frame_to_float(bgr), frame_to_float(src))
                item["aligned"] = aligned
                if aligned:
                    bgr = float_to_frame(warped, bgr.dtype)
                else:
                    warnings.warn(
                        f"background alignment failed on some frames of video {self.info.name!r}; they use the "
                        "unaligned plate (item['aligned'] is False)",
                        RuntimeWarning,
                        stacklevel=2,
                    )
            item["bgr"] = bgr
        if self._target_frame is not None:
            item["tgt"] = self._target_frame
        elif self._target_reader is not None:
            frame = self._target_reader.read(index % len(self._target_reader))
            item["tgt"] = self._at_output_size(frame)
        item["index"] = index
        item["video"] = self.info.name
        return item


class MultiVideoDataset(ConcatDataset):
    """Several `MattingVideoDataset`s end to end: each video's frames in order, each video's metadata kept.

    Names must be unique (see `unique_names`); `videos` lists each video's `VideoInfo` in order.
    """

    def __init__(self, datasets: Sequence[MattingVideoDataset]) -> None:
        if len(datasets) == 0:
            raise ValueError("MultiVideoDataset needs at least one video dataset")
        names = [dataset.info.name for dataset in datasets]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"video names must be unique in a run, repeated: {repeated} (see unique_names)")
        super().__init__(datasets)

    @property
    def videos(self) -> list[VideoInfo]:
        """Per-video metadata, in dataset order."""
        return [dataset.info for dataset in self.datasets]


class SyntheticMattingDataset(Dataset[dict[str, Any]]):
    """Frames of procedural clips (one per seed) with ground truth, rendered on demand.

    Item: {"src", "bgr" (clean plate), "fgr": [3,H,W], "pha": [1,H,W] float32 in [0,1], "index": frame
    within its clip, "video": name}. Clip k is `SyntheticScene(width, height, fps, seed=seeds[k], ...)`,
    named `names[k]` (default "synthetic_<seed>"); each process builds a scene once, on first use.
    With `augment`, each item is moved, recoloured and given a misaligned plate (`augment_sample`), drawn
    from the torch RNG of the process (DataLoader reseeds it per worker and epoch; seed_everything fixes it).
    """

    def __init__(
        self,
        seeds: Sequence[int],
        *,
        width: int = 320,
        height: int = 192,
        num_frames: int = 60,
        fps: float | str | Fraction = 30,
        camera_shake: bool = True,
        lighting_change: bool = True,
        names: Sequence[str] | None = None,
        augment: bool = False,
    ) -> None:
        check_int("num_frames", num_frames, minimum=1)
        self.augment = augment
        names = [f"synthetic_{seed}" for seed in seeds] if names is None else list(names)
        if len(names) != len(seeds) or len(set(names)) != len(names):
            raise ValueError(f"names must be {len(seeds)} distinct strings, one per seed, got {names!r}")
        self.seeds = list(seeds)
        self.scene_kwargs = {
            "width": width,
            "height": height,
            "fps": to_fraction(fps),
            "camera_shake": camera_shake,
            "lighting_change": lighting_change,
        }
        SyntheticScene(**self.scene_kwargs, seed=0)  # validate the arguments now, not in a worker
        self.videos = [VideoInfo(name, to_fraction(fps), width, height, num_frames) for name in names]
        self.num_frames = num_frames
        self._scenes: dict[int, SyntheticScene] = {}

    def __len__(self) -> int:
        return len(self.seeds) * self.num_frames

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} synthetic frames")
        clip, frame = divmod(index, self.num_frames)
        if clip not in self._scenes:
            self._scenes[clip] = SyntheticScene(**self.scene_kwargs, seed=self.seeds[clip])
        scene = self._scenes[clip]
        rendered = scene.render([frame])
        item = {
            "src": rendered["src"][0],
            "bgr": scene.plate,
            "fgr": rendered["fgr"][0],
            "pha": rendered["pha"][0],
            "index": frame,
            "video": self.videos[clip].name,
        }
        if self.augment:
            generator = torch.Generator().manual_seed(int(torch.randint(2**62, ())))
            item = augment_sample(item, generator)
            del item["scene_bgr"]
        return item

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_scenes": {}}
