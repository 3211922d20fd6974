"""precision="bf16": CPU facts and the refusal on CPUs without bf16 instructions, bf16 outputs within
tolerance of eager fp32 on the golden inputs, RVM's state carried, the state dict untouched."""

from __future__ import annotations

import pytest
import torch
from test_inference import stream
from test_models_bgmv2 import golden_inputs
from test_models_bgmv2 import reference_weights as bgmv2_weights
from test_models_rvm import GOLDEN_CASES as RVM_CASES
from test_models_rvm import golden, reference_model
from torch import nn

import lightning_matting.module
from lightning_matting.cpu import CpuInfo, cpu_info, has_native_bf16, parse_cpuinfo
from lightning_matting.models import load_model
from lightning_matting.models.precision import bf16_copy, check_bf16_device
from lightning_matting.module import MattingModule

# bf16 keeps 8 mantissa bits: measured on the golden inputs, pha within 5e-3 of eager fp32 (mean 1.5e-3)
# for RVM and BGMv2 "full". Sampling or thresholding may refine other patches (the error map moves), so a
# few patches differ by up to the refinement itself: there only the mean error is bounded.
BF16_MAX_ERROR = 1e-2
BF16_MEAN_ERROR = 2e-3
BF16_MEAN_ERROR_OTHER_PATCHES = 4e-3
NO_BF16 = CpuInfo("Intel(R) Core(TM) i5-8250U CPU @ 1.60GHz", ("avx2",))
native_bf16 = pytest.mark.skipif(
    not has_native_bf16(cpu_info().flags),
    reason=f"{cpu_info().describe()} emulates bf16 (no avx512_bf16 or amx_bf16): slow, and refused",
)


def errors(got: torch.Tensor, want: torch.Tensor) -> tuple[float, float]:
    difference = (got.float() - want.float()).abs()
    return difference.max().item(), difference.mean().item()


@pytest.mark.parametrize(
    ("flags", "native"),
    [
        (("avx2",), False),
        (("avx2", "avx512f", "avx512_vnni"), False),
        (("avx2", "avx512f", "avx512_bf16"), True),
        (("amx_tile", "amx_bf16"), True),
        ((), False),
    ],
)
def test_native_bf16_is_decided_by_the_flags(flags, native):
    assert has_native_bf16(flags) is native


def test_cpuinfo_gives_the_model_and_the_relevant_flags():
    text = (
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
        "flags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_tile amx_bf16 amx_int8\n\n"
        "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu\n"
    )
    cpu = parse_cpuinfo(text)
    assert cpu == CpuInfo(
        "Intel(R) Xeon(R) Platinum 8480+",
        ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile"),
    )
    assert parse_cpuinfo("processor\t: 0\nCPU implementer\t: 0x41\n") == CpuInfo("unknown CPU", ())
    assert CpuInfo("unknown CPU", ()).describe() == (
        "unknown CPU (none of avx2, avx512f, avx512_bf16, avx512_vnni, amx_bf16, amx_int8, amx_tile)"
    )


def test_bf16_is_refused_on_a_cpu_without_bf16_instructions_and_allowed_elsewhere():
    with pytest.raises(ValueError) as error:
        check_bf16_device(torch.device("cpu"), NO_BF16)
    assert str(error.value) == (
        "precision='bf16' needs a CPU with bf16 instructions (avx512_bf16 or amx_bf16), and this one, "
        "Intel(R) Core(TM) i5-8250U CPU @ 1.60GHz (avx2), has neither: bf16 would run emulated with fp32 "
        "instructions, slower than fp32. Use fp32 on this CPU (precision='fp32', inference='openvino'), or run on a GPU"
    )
    check_bf16_device(torch.device("cpu"), CpuInfo("Intel(R) Xeon(R) Processor", ("avx512f", "amx_bf16")))
    check_bf16_device(torch.device("cuda", 0), NO_BF16)  # a GPU: its own bf16, whatever the host CPU


def test_the_module_refuses_bf16_when_eval_starts_on_such_a_cpu(monkeypatch):
    module = MattingModule("rvm-mobilenetv3", precision="bf16")  # made anywhere: a checkpoint may move
    monkeypatch.setattr(lightning_matting.module, "cpu_info", lambda: NO_BF16)
    with pytest.raises(ValueError, match=r"^precision='bf16' needs a CPU with bf16 instructions .*\(avx2\)"):
        module.on_validation_epoch_start()
    MattingModule("rvm-mobilenetv3").on_validation_epoch_start()  # fp32 runs anywhere


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"precision": "fp16"}, "invalid precision ('fp16'): expected one of 'fp32', 'bf16'"),
        (
            {"precision": "bf16", "inference": "eager"},
            "precision='bf16' converts the inference copy of inference='fast', got inference='eager': "
            "use inference='fast' with bf16, or precision='fp32'",
        ),
        (
            {"model": nn.Conv2d(3, 37, 1), "precision": "bf16"},
            "precision='bf16' converts our networks' inference copy and Conv2d has none: convert your "
            "network yourself (net.to(torch.bfloat16)) and keep precision='fp32'",
        ),
    ],
)
def test_bad_precision_is_refused_when_the_module_is_made(options, message):
    with pytest.raises(ValueError) as error:
        MattingModule(**{"model": "rvm-mobilenetv3", **options})
    assert str(error.value) == message


@native_bf16
@pytest.mark.parametrize("case", ["dr1_clip", "dr05_dgf", "dr05_fgf"])
def test_rvm_bf16_is_within_tolerance_of_eager_on_the_golden_inputs(case):
    refiner, ratio, _, _ = RVM_CASES[case]
    model = reference_model("mobilenetv3", refiner)
    src = golden("mobilenetv3")["inputs"]["src"]
    with torch.inference_mode():
        want, got = model(src, downsample_ratio=ratio), bf16_copy(model)(src, downsample_ratio=ratio)
    assert all(x.dtype == torch.float32 for x in got)
    max_error, mean_error = errors(got[1], want[1])  # pha
    assert max_error <= BF16_MAX_ERROR and mean_error <= BF16_MEAN_ERROR, (max_error, mean_error)
    assert errors(got[0], want[0])[0] <= BF16_MAX_ERROR  # fgr


@native_bf16
@pytest.mark.parametrize("mode", ["full", "sampling"])
def test_bgmv2_bf16_is_within_tolerance_of_eager_on_the_golden_inputs(mode):
    options = {"refine_mode": mode} | ({"refine_sample_pixels": 2000} if mode == "sampling" else {})
    weights = bgmv2_weights("mattingrefine-mobilenetv2")
    model = load_model("mattingrefine-mobilenetv2", weights, **options).eval()
    src, bgr = golden_inputs()
    with torch.inference_mode():
        want, got = model(src, bgr), bf16_copy(model)(src, bgr)
    assert all(x.dtype == torch.float32 for x in got)
    max_error, mean_error = errors(got[0], want[0])  # pha
    if mode == "full":
        assert max_error <= BF16_MAX_ERROR and mean_error <= BF16_MEAN_ERROR, (max_error, mean_error)
    else:
        assert mean_error <= BF16_MEAN_ERROR_OTHER_PATCHES, mean_error


@native_bf16
def test_rvm_bf16_streamed_frame_by_frame_equals_the_whole_clip_and_keeps_the_state_dict():
    module = MattingModule("rvm-mobilenetv3", downsample_ratio=0.5, precision="bf16", outputs=["pha"])
    module.net.load_state_dict(reference_model("mobilenetv3").state_dict())
    module.eval()
    state = {key: value.clone() for key, value in module.state_dict().items()}
    clip = golden("mobilenetv3")["inputs"]["src"][0]  # [T, 3, H, W]
    with torch.inference_mode():
        whole = reference_model("mobilenetv3")(clip[None], downsample_ratio=0.5)[1][0]
    streamed = stream(module, clip, 1)
    assert streamed.dtype == torch.float32
    max_error, mean_error = errors(streamed, whole)
    assert max_error <= BF16_MAX_ERROR and mean_error <= BF16_MEAN_ERROR, (max_error, mean_error)
    assert module.state_dict().keys() == state.keys()
    assert all(torch.equal(value, state[key]) for key, value in module.state_dict().items())
