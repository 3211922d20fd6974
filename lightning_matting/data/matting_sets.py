"""Real matting datasets as they are unpacked: video mattes (VideoMatte240K layout), image mattes turned into
clips, backgrounds, and evaluation clips with ground truth. Items are uint8, decoded and composited in the
DataLoader workers.

Layouts (a clip is a folder of numbered frames or a video file, matched by name across folders)::

    videomatte/                images/                  backgrounds/          evaluation/
      fgr/0000/00000.jpg ...     fgr/0001.png             beach.jpg             src/clip1.mp4
      fgr/0001.mp4               pha/0001.png             street.mp4            pha/clip1.mp4
      pha/0000/00000.jpg ...                              office/00000.jpg ...  bgr/clip1.png   (optional)
      pha/0001.mp4                                                              fgr/clip1.mp4   (optional)
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import replace
from itertools import accumulate
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from lightning_matting.data.augmentation import augment_sample
from lightning_matting.data.datasets import resize_frame
from lightning_matting.data.readers import (
    IMAGE_EXTENSIONS,
    FrameReader,
    frame_to_float,
    frame_to_uint8,
    open_reader,
    read_image_uint8,
)
from lightning_matting.data.synthetic import SyntheticScene
from lightning_matting.metadata import VideoInfo
from lightning_matting.validators import check_int

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm"})
_LUMA = (0.299, 0.587, 0.114)  # an RGB alpha matte becomes grey by ITU-R BT.601 luma


def _entries(folder: Path, what: str) -> dict[str, Path]:
    """{clip name: path}: video files and folders of images in `folder` (images too when `what` is images)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {folder}")
    entries = {}
    for path in sorted(folder.iterdir()):
        if path.is_dir() or path.suffix.lower() in VIDEO_EXTENSIONS | IMAGE_EXTENSIONS:
            entries[path.stem if path.is_file() else path.name] = path
    return entries


def _pairs(root: Path, layers: Sequence[str], optional: Sequence[str] = ()) -> dict[str, dict[str, Path]]:
    """{clip: {layer: path}} for every clip in `root/<layers[0]>/`; each clip must be in every required layer."""
    found = {layer: _entries(root / layer, layer) for layer in layers}
    found |= {layer: _entries(root / layer, layer) for layer in optional if (root / layer).is_dir()}
    first = layers[0]
    clips = {}
    for name in found[first]:
        missing = [layer for layer in layers if name not in found[layer]]
        if missing:
            raise ValueError(
                f"clip {name!r} has {first} ({found[first][name]}) but no {', '.join(missing)} in "
                f"{', '.join(str(root / layer) for layer in missing)}"
            )
        clips[name] = {layer: found[layer][name] for layer in found if name in found[layer]}
    extra = (
        sorted(set().union(*(found[layer] for layer in layers[1:])) - set(found[first])) if layers[1:] else []
    )
    if extra:
        raise ValueError(f"clips {extra} have no {first} in {root / first}")
    if not clips:
        raise ValueError(f"{root / first} holds no clips (video files, or folders of images)")
    return clips


def _check_same(name: str, readers: dict[str, FrameReader]) -> None:
    """The layers of a clip have one frame count and one size."""
    counts = {layer: len(reader) for layer, reader in readers.items()}
    if len(set(counts.values())) > 1:
        raise ValueError(f"clip {name!r} has different frame counts: {counts}")
    sizes = {layer: (reader.info.width, reader.info.height) for layer, reader in readers.items()}
    if len(set(sizes.values())) > 1:
        shown = {layer: f"{w}x{h}" for layer, (w, h) in sizes.items()}
        raise ValueError(f"clip {name!r} has different frame sizes (WxH): {shown}")


def alpha_uint8(frames: Tensor) -> Tensor:
    """A matte read as RGB uint8 [...,3,H,W] as grey uint8 [...,1,H,W] (BT.601 luma; equal channels unchanged)."""
    weights = torch.tensor(_LUMA).view(3, 1, 1)
    return (frames.float() * weights).sum(-3, keepdim=True).round().clamp(0, 255).to(torch.uint8)


# RVM's speed change: playback rates of a training window, drawn uniformly
SPEEDS = (0.5, 1.0, 2.0, 3.0)
# BackgroundMattingV2's shadow probability and noise strength (see augment_sample)
SHADOW, NOISE = 0.3, 0.03


class Backgrounds:
    """Backgrounds from a folder: image files are stills, video files and folders of images are clips.

    Args:
        folder: The folder.

    Raises:
        ValueError: The folder holds no image or video.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"backgrounds folder not found: {self.folder}")
        self.paths = list(_entries(self.folder, "backgrounds").values())
        if not self.paths:
            raise ValueError(
                f"backgrounds folder {self.folder} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}), "
                f"videos ({', '.join(sorted(VIDEO_EXTENSIONS))}) or folders of images"
            )
        self._readers: dict[int, FrameReader] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def frames(self, choice: int, start: int, count: int, size: tuple[int, int]) -> Tensor:
        """`count` frames of background `choice` from frame `start` (a clip loops), float [count,3,H,W] at
        `size` (width, height); a still image repeats."""
        path = self.paths[choice]
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
            still = resize_frame(frame_to_float(read_image_uint8(path)[None]), *size)
            return still.expand(count, -1, -1, -1)
        if choice not in self._readers:
            self._readers[choice] = open_reader(path)
        reader = self._readers[choice]
        frames = [reader.read_uint8((start + t) % len(reader)) for t in range(count)]
        return resize_frame(frame_to_float(torch.stack(frames)), *size)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_readers": {}}


class VideoMatteDataset(Dataset[dict[str, Any]]):
    """Foreground clips with alpha (the VideoMatte240K layout) composited over backgrounds at load time.

    Item i is a window of `clip_length` consecutive frames of one clip (windows do not overlap): {"src",
    "bgr" (the plate), "fgr": uint8 [T,3,H,W] (or [3,H,W] when `clip_length` is 1), "pha": uint8 [T,1,H,W],
    "video": clip name, "index": first frame}, with src = fgr * pha + background * (1 - pha). Each window gets
    a background drawn from the process's torch RNG (DataLoader reseeds it per worker and epoch), and with
    `augment` a random move, zoom, colour jitter and plate misalignment (`augment_sample`, the references'
    per-clip augmentation), which for `clip_length` > 1 drift smoothly over the window, and RVM's speed change
    (the window read at 0.5x to 3x: slow motion repeats frames, fast skips them; `index` stays the first
    frame) and time reversal. Without `augment`, window i always gets background i mod len(backgrounds).

    Args:
        root: The dataset folder, holding `fgr/` and `pha/`.
        backgrounds: The backgrounds folder (see `Backgrounds`).
        clip_length: Frames per item: 1 for BackgroundMattingV2, a time run (e.g. 15) for RVM.
        size: (width, height) in pixels of the items; None: the clips' own size (all clips alike).
        augment: Augment each window (see above).

    Raises:
        ValueError: A clip in fgr/ without pha/ (or the reverse), different frame counts or sizes between
            a clip's fgr and pha, a clip shorter than `clip_length`, or an empty backgrounds folder.
    """

    def __init__(
        self,
        root: str | Path,
        backgrounds: str | Path,
        clip_length: int = 1,
        size: tuple[int, int] | None = None,
        augment: bool = True,
    ):
        check_int("clip_length", clip_length, minimum=1)
        self.root = Path(root)
        self.backgrounds = Backgrounds(backgrounds)
        self.clip_length = clip_length
        self.size = size
        self.augment = augment
        self.clips = _pairs(self.root, ("fgr", "pha"))
        self.windows: list[tuple[str, int]] = []
        self.lengths: dict[str, int] = {}
        sizes = set()
        for name, paths in self.clips.items():
            readers = {layer: open_reader(path) for layer, path in paths.items()}
            _check_same(name, readers)
            length = len(readers["fgr"])
            if length < clip_length:
                raise ValueError(f"clip {name!r} has {length} frames, fewer than clip_length={clip_length}")
            self.windows += [(name, start) for start in range(0, length - clip_length + 1, clip_length)]
            self.lengths[name] = length
            sizes.add((readers["fgr"].info.width, readers["fgr"].info.height))
        if size is None:
            if len(sizes) > 1:
                raise ValueError(
                    f"clips of sizes {sorted(sizes)}: give size=(width, height) to bring them to one"
                )
            self.size = sizes.pop()
        self._readers: dict[tuple[str, str], FrameReader] = {}

    def __len__(self) -> int:
        return len(self.windows)

    def _layer(self, name: str, layer: str, frames: list[int]) -> Tensor:
        if (name, layer) not in self._readers:
            self._readers[name, layer] = open_reader(self.clips[name][layer])
        reader = self._readers[name, layer]
        read = {frame: reader.read_uint8(frame) for frame in dict.fromkeys(frames)}  # slow motion repeats
        return torch.stack([read[frame] for frame in frames])

    def _frames(self, name: str, start: int) -> list[int]:
        """The frames of the window at `start`: consecutive, or with `augment` at a random speed (RVM)."""
        if not self.augment or self.clip_length == 1:
            return list(range(start, start + self.clip_length))
        speed = SPEEDS[int(torch.randint(len(SPEEDS), ()))]
        span = min(int((self.clip_length - 1) * speed), self.lengths[name] - 1)  # a short clip caps the speed
        first = min(start, self.lengths[name] - 1 - span)
        return [first + min(int(t * speed), span) for t in range(self.clip_length)]

    def __getitem__(self, index: int) -> dict[str, Any]:
        name, start = self.windows[index]
        frames = self._frames(name, start)
        fgr = resize_frame(frame_to_float(self._layer(name, "fgr", frames)), *self.size)
        pha = resize_frame(frame_to_float(alpha_uint8(self._layer(name, "pha", frames))), *self.size)
        return compose(self, fgr, pha, name, frames[0], index)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_readers": {}}


class ImageMattingDataset(Dataset[dict[str, Any]]):
    """Image mattes (foreground + alpha image folders, as PhotoMatte85, Composition-1k, AIM-500 and
    Distinctions-646 unpack) turned into clips by a smooth random motion, as RVM trains on them.

    Item i is image i moved smoothly over `clip_length` frames (a translation and zoom that change linearly
    from a random start to a random end, the same path for fgr and pha) and composited over a background,
    with the keys and shapes of `VideoMatteDataset`.

    Args:
        root: The dataset folder, holding `fgr/` and `pha/` images matched by file stem.
        backgrounds: The backgrounds folder (see `Backgrounds`).
        clip_length: Frames per item.
        size: (width, height) in pixels of the items.
        augment: Colour jitter and plate misalignment on top of the motion (`augment_sample`).
        motion: The largest translation (fraction of the size) and zoom change over a clip.

    Raises:
        ValueError: An image without its alpha (or the reverse), an alpha of another size, or an empty
            backgrounds folder.
    """

    def __init__(
        self,
        root: str | Path,
        backgrounds: str | Path,
        clip_length: int = 8,
        size: tuple[int, int] = (512, 288),
        augment: bool = True,
        motion: float = 0.1,
    ):
        check_int("clip_length", clip_length, minimum=1)
        self.root = Path(root)
        self.backgrounds = Backgrounds(backgrounds)
        self.clips = _pairs(self.root, ("fgr", "pha"))
        self.names = list(self.clips)
        self.clip_length = clip_length
        self.size = size
        self.augment = augment
        self.motion = motion

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict[str, Any]:
        name = self.names[index]
        fgr = read_image_uint8(self.clips[name]["fgr"])
        pha = read_image_uint8(self.clips[name]["pha"])
        if fgr.shape != pha.shape:
            raise ValueError(
                f"image {name!r}: fgr {self.clips[name]['fgr']} is {fgr.shape[2]}x{fgr.shape[1]} but pha "
                f"{self.clips[name]['pha']} is {pha.shape[2]}x{pha.shape[1]}"
            )
        layers = frame_to_float(torch.cat([fgr, alpha_uint8(pha)])[None])
        layers = resize_frame(layers, *self.size).expand(self.clip_length, -1, -1, -1)
        moved = _smooth_motion(layers, self.motion, _generator(self.augment, index))
        return compose(self, moved[:, :3], moved[:, 3:], name, 0, index)


def _generator(random: bool, index: int) -> torch.Generator:
    """The process's RNG stream (reseeded per worker and epoch) when random, else a fixed one per item."""
    seed = int(torch.randint(2**62, ())) if random else index
    return torch.Generator().manual_seed(seed)


def _smooth_motion(layers: Tensor, motion: float, generator: torch.Generator) -> Tensor:
    """Frames [T,C,H,W] moved along a straight path from one random translation/zoom to another."""
    count = len(layers)
    ends = (torch.rand(2, 3, generator=generator) * 2 - 1) * motion  # (dx, dy, zoom) at the start and end
    steps = torch.linspace(0, 1, count)[:, None] if count > 1 else torch.zeros(1, 1)
    path = ends[0] + (ends[1] - ends[0]) * steps
    theta = torch.zeros(count, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / (1 + path[:, 2])
    theta[:, 0, 2], theta[:, 1, 2] = path[:, 0] * 2, path[:, 1] * 2
    grid = F.affine_grid(theta, list(layers.shape), align_corners=False)
    return F.grid_sample(layers, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def compose(dataset: Any, fgr: Tensor, pha: Tensor, name: str, start: int, index: int) -> dict[str, Any]:
    """Composite float fgr [T,3,H,W] and pha [T,1,H,W] over a background; augment; uint8 item."""
    count = len(fgr)
    if dataset.augment:
        choice = int(torch.randint(len(dataset.backgrounds), ()))
        frame = int(torch.randint(1 << 30, ()))
    else:
        choice, frame = index % len(dataset.backgrounds), 0
    width, height = fgr.shape[-1], fgr.shape[-2]
    background = dataset.backgrounds.frames(choice, frame, count, (width, height))
    sample = {"src": fgr * pha + background * (1 - pha), "bgr": background.clone(), "fgr": fgr, "pha": pha}
    return _item(sample | {"scene_bgr": background}, dataset.augment, index, name, start)


def _item(sample: dict[str, Tensor], augment: bool, index: int, name: str, start: int) -> dict[str, Any]:
    """A float sample of [T,C,H,W] layers (and "scene_bgr") augmented (see `compose`) as a uint8 item; a
    single frame loses its T."""
    count = len(sample["pha"])
    if augment:
        generator = _generator(True, index)
        sample = augment_sample(sample, generator, shadow=SHADOW, noise=NOISE, vary=count > 1)
        if count > 1 and bool(torch.rand((), generator=generator) < 0.5):  # time reversal (RVM)
            sample = {key: value.flip(0) for key, value in sample.items()}
    item = {key: frame_to_uint8(sample[key]) for key in ("src", "bgr", "fgr", "pha")}
    if count == 1:
        item = {key: value[0] for key, value in item.items()}
    return item | {"video": name, "index": start}


class SyntheticWindows(Dataset[dict[str, Any]]):
    """Windows of procedural clips as `VideoMatteDataset` items, to mix into a real training set.

    Clip k is `SyntheticScene(width, height, seed=seeds[k])` (camera shake, lighting change, hair) of
    `num_frames` frames, cut into windows of `clip_length` frames; item i is window i mod their number (so
    `count` may exceed it: each repeat is augmented anew), augmented as `VideoMatteDataset` does, uint8.

    Args:
        seeds: One seed per clip.
        clip_length: Frames per item (as the real dataset's).
        size: (width, height) in pixels (as the real dataset's).
        num_frames: Frames per clip (>= clip_length).
        count: Items in the dataset.
        augment: Augment each window.

    Raises:
        ValueError: No seed, a count < 0, or clips shorter than `clip_length`.
    """

    def __init__(
        self,
        seeds: Sequence[int],
        clip_length: int,
        size: tuple[int, int],
        num_frames: int,
        count: int,
        augment: bool = True,
    ):
        if not seeds or count < 0 or num_frames < clip_length:
            raise ValueError(
                f"SyntheticWindows needs seeds, count >= 0 and num_frames >= clip_length, got {len(seeds)} seeds, "
                f"count {count}, num_frames {num_frames}, clip_length {clip_length}"
            )
        self.seeds = list(seeds)
        self.clip_length = clip_length
        self.size = size
        self.count = count
        self.augment = augment
        starts = range(0, num_frames - clip_length + 1, clip_length)
        self.windows = [(clip, start) for clip in range(len(self.seeds)) for start in starts]
        self._scenes: dict[int, SyntheticScene] = {}

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.count:
            raise IndexError(f"index {index} out of range for {self.count} synthetic windows")
        clip, start = self.windows[index % len(self.windows)]
        if clip not in self._scenes:
            self._scenes[clip] = SyntheticScene(*self.size, seed=self.seeds[clip])
        scene = self._scenes[clip]
        rendered = scene.render(list(range(start, start + self.clip_length)))
        sample = {
            "src": rendered["src"],
            "bgr": scene.plate.expand(self.clip_length, -1, -1, -1).clone(),
            "fgr": rendered["fgr"],
            "pha": rendered["pha"],
            "scene_bgr": rendered["scene_bgr"],
        }
        return _item(sample, self.augment, index, f"synthetic_{self.seeds[clip]}", start)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_scenes": {}}


class EvaluationClips(Dataset[dict[str, Any]]):
    """Clips with ground truth for validation: `src/` with `pha/`, optional `bgr/` plates and `fgr/`.

    Item i is one frame: {"src", "pha" (grey), and "bgr", "fgr" where given: uint8 [C,H,W], "video": clip
    name, "index": frame}; the clips follow each other, so `VideoBatchSampler` batches consecutive frames
    of one clip, like predict. A plate is an image (one for every frame) or a clip of the same length.

    Args:
        root: The folder holding `src/` and `pha/` (and optionally `bgr/`, `fgr/`).
        fps: Frame rate of clips given as image folders (videos carry their own).

    Raises:
        ValueError: A clip without its alpha, or different frame counts or sizes among a clip's layers.
    """

    def __init__(self, root: str | Path, fps: float | str = 30):
        self.root = Path(root)
        self.clips = _pairs(self.root, ("src", "pha"), optional=("bgr", "fgr"))
        self.videos: list[VideoInfo] = []
        self._readers: dict[tuple[str, str], FrameReader] = {}
        for name, paths in self.clips.items():
            readers = {
                layer: open_reader(path, fps=fps, name=name)
                for layer, path in paths.items()
                if not (layer == "bgr" and path.suffix.lower() in IMAGE_EXTENSIONS)
            }
            _check_same(name, readers)
            info = readers["src"].info
            self.videos.append(replace(info, name=name, num_frames=len(readers["src"])))
        self._offsets = [0, *accumulate(video.num_frames for video in self.videos)]

    def __len__(self) -> int:
        return self._offsets[-1]

    def __getitem__(self, index: int) -> dict[str, Any]:
        clip = bisect_right(self._offsets, index) - 1
        name, frame = self.videos[clip].name, index - self._offsets[clip]
        item = {}
        for layer, path in self.clips[name].items():
            if layer == "bgr" and path.suffix.lower() in IMAGE_EXTENSIONS:
                item[layer] = read_image_uint8(path)
                continue
            if (name, layer) not in self._readers:
                self._readers[name, layer] = open_reader(path, name=name)
            item[layer] = self._readers[name, layer].read_uint8(frame)
        item["pha"] = alpha_uint8(item["pha"])
        return item | {"video": name, "index": frame}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_readers": {}}
