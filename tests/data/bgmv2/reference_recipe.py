"""Deterministic weights and inputs behind the golden outputs in golden/.

The golden files were produced by the reference BackgroundMattingV2 model code
(MIT licence, commit a8e82df) with these weights and inputs. An implementation
whose state_dict has exactly the keys and shapes in manifests/<variant>.json, and
which computes what the reference computes, reproduces golden outputs to within
float16 storage error (about 1e-3).
"""

import json
import math

import torch


def reference_weights(manifest: dict) -> dict:
    """State dict for a manifest ({key: shape}, in file order)."""
    sd = {}
    for i, (k, shape) in enumerate(manifest.items()):
        g = torch.Generator().manual_seed(i)
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(0, dtype=torch.long)
        elif k.endswith("running_var"):
            sd[k] = torch.rand(shape, generator=g) + 0.5
        elif k.endswith("running_mean"):
            sd[k] = torch.randn(shape, generator=g) * 0.1
        elif len(shape) == 1 and k.endswith("weight"):
            sd[k] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif len(shape) == 1:
            sd[k] = 0.1 * torch.randn(shape, generator=g) + (0.3 if k.endswith("conv4.bias") else 0.0)
        else:
            fan_in = math.prod(shape[1:])
            sd[k] = torch.randn(shape, generator=g) * math.sqrt(1.0 / fan_in)
    return sd


def load_manifest(path) -> dict:
    with open(path) as f:
        return json.load(f)
