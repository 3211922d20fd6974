"""Our networks run by OpenVINO (the `[openvino]` extra, which `make test` installs): the golden outputs in
float32 and bfloat16, RVM's state carried across calls and batches, BGMv2 with its refiner in torch, and
every refusal named."""

from __future__ import annotations

import copy
import logging
import sys

import pytest
import torch
from runtime_checks import check_module_streams_like_eager, check_rvm_against_eager_and_golden
from test_inference import max_error, rvm_module
from test_models_bgmv2 import assert_matches_golden, golden_inputs, refine_model
from test_models_rvm import golden, reference_model

from lightning_matting.models import load_model
from lightning_matting.models.openvino_runtime import OpenVinoBGMv2, OpenVinoRVM
from lightning_matting.module import MattingModule
from lightning_matting.settings import RefineSettings

pytest.importorskip("openvino", reason="the [openvino] extra")

F32_TOLERANCE = 1e-4  # BatchNorm folded and OpenVINO's f32 kernels: 3e-7 measured (mobilenetv3 and resnet50)
BF16_TOLERANCE = 1e-2  # bfloat16's 8-bit mantissa: 7e-3 measured (a state; fgr 4.8e-3, pha 3.7e-3)


def bf16_cpu() -> bool:
    import openvino

    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.mark.parametrize(
    "variant", ["mobilenetv3"]
)  # resnet50 converts the same way (3e-7 measured), in 20 s more
def test_openvino_rvm_matches_eager_and_golden_and_carries_its_state(variant):
    model = reference_model(variant)
    network = OpenVinoRVM(model)
    check_rvm_against_eager_and_golden(network, model, variant, F32_TOLERANCE)
    assert list(network._models._compiled) == [
        (1, 112, 192, 0.5, torch.get_num_threads())
    ]  # one model, reused


@pytest.mark.skipif(not bf16_cpu(), reason="this CPU has no bfloat16 instructions (AVX512_BF16 or AMX)")
def test_openvino_bf16_stays_near_eager():
    model = reference_model("mobilenetv3")
    clip = golden("mobilenetv3")["inputs"]["src"]
    with torch.inference_mode():
        bf16, eager = (
            OpenVinoRVM(model, "bf16")(clip, downsample_ratio=0.5),
            model(clip, downsample_ratio=0.5),
        )
    assert all(x.dtype == torch.float32 for x in bf16)
    assert 1e-5 < max_error(tuple(bf16), tuple(eager)) <= BF16_TOLERANCE  # bfloat16 ran: not float32


def test_bgmv2_base_network_in_openvino_and_refiner_in_torch_match_eager_and_golden():
    model = refine_model("mattingrefine-mobilenetv2", "sampling")
    src, bgr = golden_inputs()
    with torch.inference_mode():
        converted, eager = OpenVinoBGMv2(model)(src, bgr), model(src, bgr)
    assert max_error(tuple(converted), tuple(eager)) <= F32_TOLERANCE  # 6e-7 measured
    assert_matches_golden(converted, "mattingrefine-mobilenetv2", "sampling")
    module = MattingModule(
        "mattingrefine-mobilenetv2", inference="openvino-bf16", refine=RefineSettings(mode="thresholding")
    )
    network = module.eval().networks.for_inference(module.net)
    assert isinstance(network, OpenVinoBGMv2) and network.precision == "bf16"


def test_module_runs_openvino_in_eval_carrying_the_state_across_batches():
    converted = check_module_streams_like_eager("openvino", F32_TOLERANCE)
    network = converted.networks.for_inference(converted.net)
    assert isinstance(network, OpenVinoRVM) and network.precision == "f32"
    with torch.no_grad():
        converted.net.project_mat.conv.bias.add_(0.5)  # new weights: converted again
    assert converted.networks.for_inference(converted.net) is not network
    copied = copy.deepcopy(converted)  # compiled models cannot be copied: the copy builds its own
    assert copied.networks._copy is None and converted.networks._copy is not None
    with pytest.raises(
        ValueError, match="inference='openvino' runs on the CPU and this module is on meta: use "
    ):
        copied.to("meta").on_validation_epoch_start()
    bf16 = rvm_module(inference="openvino-bf16")
    assert bf16.networks.for_inference(bf16.net).precision == "bf16"


def test_bad_settings_are_refused_with_their_names(monkeypatch):
    with pytest.raises(
        ValueError,
        match="inference='openvino' runs our RobustVideoMatting and BackgroundMattingV2 networks; Conv2d runs",
    ):
        MattingModule(torch.nn.Conv2d(6, 4, 1), inference="openvino")
    with pytest.raises(
        ValueError,
        match="compile=True compiles torch networks and inference='openvino-bf16' runs an OpenVINO model: ",
    ):
        MattingModule("rvm-mobilenetv3", inference="openvino-bf16", compile=True)
    with pytest.raises(ValueError, match=r"need seg, and inference='openvino' runs RVM's matting pass only"):
        MattingModule("rvm-mobilenetv3", inference="openvino", outputs=["pha", "seg"])
    with pytest.raises(
        ValueError, match="OpenVINO runs here on the CPU and the network is on meta: on a GPU"
    ):
        OpenVinoRVM(load_model("rvm-mobilenetv3").to("meta"))
    with pytest.raises(TypeError, match="OpenVinoRVM runs our RobustVideoMatting networks, got MattingBase"):
        OpenVinoRVM(load_model("mattingbase-mobilenetv2"))
    with pytest.raises(
        TypeError, match="OpenVinoBGMv2 runs our MattingBase and MattingRefine networks, got Robu"
    ):
        OpenVinoBGMv2(load_model("rvm-mobilenetv3"))
    with pytest.raises(
        ValueError, match="OpenVINO runs here on the CPU and the network is on meta: on a GPU"
    ):
        OpenVinoBGMv2(load_model("mattingbase-mobilenetv2").to("meta"))
    base, frames = OpenVinoBGMv2(load_model("mattingbase-mobilenetv2")), torch.rand(2, 1, 3, 48, 64)
    with pytest.raises(ValueError, match=r"OpenVINO runs here on the CPU in float32; got src torch.float64"):
        base(frames[0].double(), frames[1].double())
    with pytest.raises(ValueError, match=r"bgr must have the same \[B, 3, H, W\] shape as src"):
        base(frames[0], frames[1, :, :, :40])
    net = load_model("rvm-mobilenetv3")
    with pytest.raises(
        ValueError, match=r"invalid precision \('fp16'\): expected one of 'f32', 'bf16', 'int8'"
    ):
        OpenVinoRVM(net, "fp16")
    network, src = OpenVinoRVM(net), torch.rand(1, 3, 48, 64)
    with pytest.raises(ValueError, match="OpenVINO runs RVM's matting pass only; for seg use"):
        network(src, segmentation_pass=True)
    with pytest.raises(ValueError, match=r"OpenVINO runs here on the CPU in float32; got src torch.float64"):
        network(src.double())
    with pytest.raises(ValueError, match=r"src must be \[N,3,H,W\] or \[N,T,3,H,W\] \(RGB\), got shape"):
        network(src[0])
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if the extra were not installed
    with pytest.raises(
        ImportError,
        match=r"OpenVINO inference needs openvino \(pip install 'lightning-matting\[openvino\]'\)",
    ):
        MattingModule("rvm-mobilenetv3", inference="openvino")


INT8_PHA_TOLERANCE = 5e-2  # int8 steps of the activations: 2.5e-2 measured on RVM's golden clip
INT8_PHA_MEAN_TOLERANCE = 1e-2  # 3.6e-3 measured


def test_openvino_int8_calibrates_on_the_first_call_and_stays_near_eager():
    model = reference_model("mobilenetv3")
    clip = golden("mobilenetv3")["inputs"]["src"]
    network = OpenVinoRVM(model, "int8")
    with torch.inference_mode():
        int8, eager = network(clip, downsample_ratio=0.5), model(clip, downsample_ratio=0.5)
    error = (int8[1] - eager[1]).abs()
    assert 1e-4 < error.max() <= INT8_PHA_TOLERANCE  # quantized: not float32
    assert error.mean() <= INT8_PHA_MEAN_TOLERANCE
    assert all(x.dtype == torch.float32 for x in int8)
    assert list(network._models._models) == [(1, 112, 192, 0.5)]  # calibrated once for the size


def test_openvino_int8_quietens_nncf_without_touching_other_handlers():
    """Another program's handler on the "nncf" logger (pytest's log capture is one) keeps its level."""
    nncf_logger, handler = logging.getLogger("nncf"), logging.Handler()
    level = nncf_logger.level
    nncf_logger.addHandler(handler)
    try:
        OpenVinoRVM(reference_model("mobilenetv3"), "int8")
        assert (handler.level, nncf_logger.level) == (logging.NOTSET, logging.ERROR)
    finally:
        nncf_logger.removeHandler(handler)
        nncf_logger.setLevel(level)


def test_openvino_int8_without_nncf_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "nncf", None)  # as if nncf were not installed
    with pytest.raises(
        ImportError,
        match=r"OpenVINO int8 inference needs nncf \(pip install 'lightning-matting\[openvino\]'\)",
    ):
        MattingModule("rvm-mobilenetv3", inference="openvino-int8")
    with pytest.raises(ImportError, match=r"OpenVINO int8 inference needs nncf"):
        OpenVinoBGMv2(load_model("mattingbase-mobilenetv2"), "int8")
