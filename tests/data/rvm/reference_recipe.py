"""Deterministic weights and input clip behind the golden outputs in golden/.

The golden files were produced by the reference RobustVideoMatting model code (MIT licence,
commit 53d74c6) with these weights and this clip. An implementation whose state_dict has exactly
the keys and shapes in manifests/<variant>.json, and which computes what the reference computes,
reproduces the golden outputs to within the tolerance in README.md.
"""

import json
import math

import torch


def reference_weights(manifest: dict) -> dict:
    """State dict for a manifest ({key: shape}, in file order)."""
    sd = {}
    for i, (k, shape) in enumerate(manifest.items()):
        g = torch.Generator().manual_seed(i)
        if k == "refiner.box_filter.weight":
            sd[k] = torch.full(shape, 1 / 9)  # the reference's own initialisation: a 3x3 mean
        elif k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(0, dtype=torch.long)
        elif k.endswith("running_var"):
            sd[k] = torch.rand(shape, generator=g) + 0.5
        elif k.endswith("running_mean"):
            sd[k] = torch.randn(shape, generator=g) * 0.1
        elif len(shape) == 1 and k.endswith("weight"):
            sd[k] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif len(shape) == 1:
            sd[k] = 0.1 * torch.randn(shape, generator=g)
            if k == "project_mat.conv.bias":
                sd[k][3] += 0.5  # centre the alpha channel so that clamping leaves a live matte
        else:
            fan_in = math.prod(shape[1:])
            sd[k] = torch.randn(shape, generator=g) * math.sqrt(1.0 / fan_in)
    return sd


def reference_clip(frames: int = 4, height: int = 112, width: int = 192) -> torch.Tensor:
    """Input clip [1, T, 3, H, W] in [0, 1]: a textured backdrop and a soft disc that moves."""
    g = torch.Generator().manual_seed(1234)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    backdrop = torch.stack([0.5 + 0.3 * torch.sin(6 * xx + 2 * yy), 0.4 + 0.3 * yy, 0.6 - 0.2 * xx])
    backdrop = backdrop + 0.05 * torch.rand(3, height, width, generator=g)
    colour = torch.tensor([0.9, 0.3, 0.2]).view(3, 1, 1)
    clip = []
    for t in range(frames):
        cx, cy = 0.3 + 0.08 * t, 0.5 + 0.03 * t
        d = ((xx - cx) ** 2 * (width / height) ** 2 + (yy - cy) ** 2).sqrt()
        a = (1 - ((d - 0.25) / 0.03).sigmoid()).unsqueeze(0)
        clip.append(a * colour + (1 - a) * backdrop)
    return torch.stack(clip).clamp(0, 1).unsqueeze(0)


def load_manifest(path) -> dict:
    with open(path) as f:
        return json.load(f)
