"""inference="auto": which paths a CPU's flags and the installed modules allow, the choice from timings and
errors, and a module that times its candidates at the first batch, logs them and keeps the chosen one."""

from __future__ import annotations

import logging

import pytest
import torch
from test_inference import rvm_module, stream

import lightning_matting.models.auto_inference as auto_inference
from lightning_matting.cpu import CpuInfo
from lightning_matting.models.auto_inference import AUTO_TOLERANCE, auto_candidates, choose_candidate
from lightning_matting.module import MattingModule

AMX = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


@pytest.mark.parametrize(
    ("flags", "installed", "expected"),
    [
        (("avx2",), set(), ("fast",)),
        (("avx2",), {"openvino"}, ("fast", "openvino")),
        (("avx2",), {"openvino", "nncf"}, ("fast", "openvino", "openvino-int8")),
        (("avx2",), {"nncf"}, ("fast",)),
        (AMX, set(), ("fast", "bf16")),
        (AMX, {"openvino", "nncf"}, ("fast", "bf16", "openvino", "openvino-bf16", "openvino-int8")),
    ],
)
def test_candidates_follow_the_cpu_flags_and_the_installed_runtimes(flags, installed, expected):
    assert auto_candidates(flags, installed) == expected


def test_the_fastest_candidate_within_tolerance_is_chosen():
    seconds = {"fast": 1.0, "bf16": 0.4, "openvino": 0.7, "openvino-int8": 0.2}
    errors = {"fast": 0.0, "bf16": 3e-3, "openvino": 2e-7, "openvino-int8": 2e-2}
    assert choose_candidate(seconds, errors) == "openvino"  # bf16 and int8 are faster but too far
    assert choose_candidate(seconds, {**errors, "bf16": 1e-3}) == "bf16"
    assert choose_candidate(seconds, {**errors, "bf16": AUTO_TOLERANCE}) == "openvino"  # below, not at
    assert choose_candidate({"fast": 1.0, "bf16": 1.5}, {"fast": 0.0, "bf16": 0.0}) == "fast"
    assert choose_candidate({"fast": 1.0, "bf16": 0.1}, {"fast": 0.0, "bf16": 0.5}) == "fast"  # all too far


def test_auto_times_the_candidates_at_the_first_batch_logs_them_and_keeps_the_choice(monkeypatch, caplog):
    monkeypatch.setattr(auto_inference, "cpu_info", lambda: CpuInfo("Test CPU", AMX))
    monkeypatch.setattr(auto_inference, "installed_runtimes", lambda: frozenset())  # no OpenVINO: fast
    auto, exact = rvm_module(inference="auto"), rvm_module(inference="fast")
    exact.net.load_state_dict(auto.net.state_dict())
    clip = torch.rand(4, 3, 48, 64, generator=torch.Generator().manual_seed(0))
    with caplog.at_level(logging.INFO):
        got = stream(auto, clip, 2)
    timed = [line for line in caplog.text.splitlines() if "inference='auto' timed" in line]
    assert len(timed) == 2 and "timed inference='fast': " in timed[0] and "precision='bf16'" in timed[1]
    assert "ms for 2 frame(s), pha error 0.0e+00 against float32 (kept; limit 2e-03)" in timed[0]
    network = auto.networks.for_inference(auto.net)
    assert network.chosen in ("fast", "bf16") and list(network._paths) == [network.chosen]
    assert (
        f"inference='auto' runs {auto_inference.SETTINGS[network.chosen]} (the fastest kept)" in caplog.text
    )
    assert caplog.text.count("inference='auto' runs") == 1  # chosen once, at the first batch
    torch.testing.assert_close(got, stream(exact, clip, 2), atol=AUTO_TOLERANCE, rtol=0)


def test_auto_with_compile_is_refused():
    with pytest.raises(
        ValueError,
        match=r"compile=True compiles torch networks and inference='auto' times other paths too \(OpenVINO, "
        r"bf16\): choose one",
    ):
        MattingModule("rvm-mobilenetv3", inference="auto", compile=True)


def test_auto_off_the_cpu_runs_fast_only():
    network = auto_inference.AutoInference(rvm_module().net.to("meta"), ("fast", "bf16", "openvino"))
    assert network.candidates == ("fast",)
