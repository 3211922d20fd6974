"""Checks shared by the tests of RVM run by an outside runtime (ONNX Runtime, OpenVINO): the golden outputs,
the state carried frame by frame, and a module streaming batches as eager does."""

from __future__ import annotations

import pytest
import torch
from test_inference import max_error, rvm_module, stream
from test_models_rvm import golden, reference_model
from torch import nn

from lightning_matting.module import MattingModule


def check_rvm_against_eager_and_golden(
    network: nn.Module, model: nn.Module, variant: str, tolerance: float
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Check `network` (the runtime's copy of `model`) on the golden clip of `variant` at downsample_ratio 0.5.

    The whole clip is within `tolerance` of eager `model` and within 2e-3 of the golden fgr and pha; frame by
    frame with the state carried it gives the whole clip's alpha; states of other shapes are refused.

    Returns:
        The golden clip [1, T, 3, H, W] and the states after its last frame.
    """
    clip = golden(variant)["inputs"]["src"]  # [1, T, 3, H, W]
    expected = golden(variant)["outputs"]["dr05_dgf"]
    with torch.inference_mode():
        whole = network(clip, downsample_ratio=0.5)
        eager = model(clip, downsample_ratio=0.5)
        states, pha = [None] * 4, []
        for t in range(clip.size(1)):
            _, frame_pha, *states = network(clip[:, t], *states, downsample_ratio=0.5)
            pha.append(frame_pha)
        with pytest.raises(
            ValueError, match=r"states r1..r4 must be float32 of shapes \[\[1, 16, 28, 48\], "
        ):
            network(clip[:, 0], *(state[..., :-1] for state in states), downsample_ratio=0.5)
    assert max_error(tuple(whole), tuple(eager)) <= tolerance
    torch.testing.assert_close(torch.stack(pha, 1), whole[1], atol=1e-6, rtol=0)
    for name, output in zip(("fgr", "pha"), whole[:2], strict=True):
        torch.testing.assert_close(output, expected[name].float(), atol=2e-3, rtol=0, msg=name)
    return clip, states


def check_module_streams_like_eager(inference: str, tolerance: float) -> MattingModule:
    """A MattingModule of rvm-mobilenetv3 with the reference weights running `inference`, checked to matte a
    5-frame clip in batches of 2 (the state carried) within `tolerance` of eager in one batch, with the
    state_dict keys of an eager module."""
    weights = reference_model("mobilenetv3").state_dict()
    module, eager = rvm_module(inference=inference), rvm_module(inference="eager")
    keys = list(module.state_dict())
    module.net.load_state_dict(weights)
    eager.net.load_state_dict(weights)
    clip = torch.rand(5, 3, 48, 64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(stream(module, clip, 2), stream(eager, clip, 5), atol=tolerance, rtol=0)
    assert list(module.state_dict()) == keys
    return module
