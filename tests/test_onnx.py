"""Our networks exported to ONNX, and RVM run by ONNX Runtime (the `[onnx]` extra, which `make test`
installs): the golden outputs, RVM's state carried across calls and batches, the export script's files, and
every refusal named."""

from __future__ import annotations

import copy
import runpy
import sys
from pathlib import Path

import pytest
import torch
from runtime_checks import check_module_streams_like_eager, check_rvm_against_eager_and_golden
from test_inference import max_error
from test_models_bgmv2 import assert_matches_golden, golden_inputs, refine_model
from test_models_rvm import reference_model

from lightning_matting.models import load_model
from lightning_matting.models.onnx_export import export_onnx, export_rvm, save_onnx
from lightning_matting.models.onnx_runtime import OnnxRuntimeRVM
from lightning_matting.module import MattingModule

onnxruntime = pytest.importorskip("onnxruntime", reason="the [onnx] extra")

SCRIPT = Path(__file__).parents[1] / "scripts" / "export_onnx.py"
EXPORT_TOLERANCE = 1e-5  # BatchNorm folded and ONNX Runtime's kernels: float rounding only (3e-7 measured)


def test_onnxruntime_rvm_matches_eager_and_golden_and_carries_its_state():
    model = reference_model("mobilenetv3")
    network = OnnxRuntimeRVM(model)
    clip, states = check_rvm_against_eager_and_golden(network, model, "mobilenetv3", EXPORT_TOLERANCE)
    with torch.inference_mode():
        with pytest.raises(ValueError, match=r"got \[\(\[1, 16, 28, 48\], torch.float64\), "):
            network(clip[:, 0], *(state.double() for state in states), downsample_ratio=0.5)
        zeros_r1 = network(clip[:, 0], torch.zeros_like(states[0]), *states[1:], downsample_ratio=0.5)
        none_r1 = network(clip[:, 0], None, *states[1:], downsample_ratio=0.5)  # only r1 starts afresh
    assert all(torch.equal(a, b) for a, b in zip(zeros_r1, none_r1, strict=True))
    assert list(network._sessions) == [(1, 112, 192, 0.5, torch.get_num_threads())]  # one export, reused


def test_onnxruntime_rvm_mattes_videos_side_by_side():
    model = reference_model("mobilenetv3")
    clips = torch.rand(2, 3, 3, 48, 64, generator=torch.Generator().manual_seed(3))  # [N, T, 3, H, W]
    with torch.inference_mode():
        exported, eager = (
            OnnxRuntimeRVM(model)(clips, downsample_ratio=0.5),
            model(clips, downsample_ratio=0.5),
        )
    assert [list(x.shape) for x in exported[:3]] == [[2, 3, 3, 48, 64], [2, 3, 1, 48, 64], [2, 16, 12, 16]]
    assert max_error(tuple(exported), tuple(eager)) <= EXPORT_TOLERANCE


def test_module_runs_onnxruntime_in_eval_carrying_the_state_across_batches():
    exported = check_module_streams_like_eager("onnxruntime", EXPORT_TOLERANCE)
    assert isinstance(exported.networks.for_inference(exported.net), OnnxRuntimeRVM)
    MattingModule("rvm-mobilenetv3").load_state_dict(exported.state_dict(), strict=True)
    copied = copy.deepcopy(exported)  # sessions cannot be copied: the copy builds its own when it runs
    assert copied.networks._copy is None and exported.networks._copy is not None
    with pytest.raises(ValueError, match="module is on meta: use inference='fast' on a GPU"):
        copied.to("meta").on_validation_epoch_start()


def run_script(folder: Path, monkeypatch, variant: str, model: torch.nn.Module, *options: str) -> Path:
    """scripts/export_onnx.py on `model`'s weights saved to `folder`, at 64x48; returns the file written."""
    torch.save(model.state_dict(), folder / "weights.pth")
    output = folder / "model.onnx"
    argv = ["export_onnx.py", variant, str(folder / "weights.pth"), "--size", "64x48", *options]
    monkeypatch.setattr(sys, "argv", [*argv, "--output", str(output)])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    return output


def test_export_script_writes_a_file_that_runs_as_the_network(tmp_path, monkeypatch, capsys):
    model = reference_model("mobilenetv3")
    output = run_script(tmp_path, monkeypatch, "rvm-mobilenetv3", model, "--downsample-ratio", "0.5")
    assert f"RobustVideoMatting at 64x48 -> {output}" in capsys.readouterr().out
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    inputs, outputs = session.get_inputs(), session.get_outputs()
    assert [(x.name, x.shape) for x in inputs[:2]] == [("src", [1, 3, 48, 64]), ("r1i", [1, 16, 12, 16])]
    assert [x.name for x in inputs] == ["src", "r1i", "r2i", "r3i", "r4i"]
    assert [x.name for x in outputs] == ["fgr", "pha", "r1o", "r2o", "r3o", "r4o"]
    metadata = session.get_modelmeta().custom_metadata_map
    assert metadata == {"width": "64", "height": "48", "downsample_ratio": "0.5", "batch_size": "1"}
    frames = torch.rand(2, 1, 3, 48, 64, generator=torch.Generator().manual_seed(1))
    states = [torch.zeros(x.shape).numpy() for x in inputs[1:]]
    eager_states = [None] * 4
    for frame in frames:  # two frames: the second runs on the state the file returned
        feeds = dict(zip([x.name for x in inputs], [frame.numpy(), *states], strict=True))
        fgr, pha, *states = session.run(None, feeds)
        with torch.no_grad():
            want_fgr, want_pha, *eager_states = model(frame, *eager_states, downsample_ratio=0.5)
        assert (
            max_error((torch.from_numpy(fgr), torch.from_numpy(pha)), (want_fgr, want_pha))
            <= EXPORT_TOLERANCE
        )


def run_file(model: bytes | Path, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    session = onnxruntime.InferenceSession(
        model if isinstance(model, bytes) else str(model), providers=["CPUExecutionProvider"]
    )
    feeds = {node.name: x.numpy() for node, x in zip(session.get_inputs(), inputs, strict=True)}
    return tuple(torch.from_numpy(x) for x in session.run(None, feeds))


def test_bgmv2_refine_export_matches_the_network_and_golden():
    model = refine_model("mattingrefine-mobilenetv2", "sampling")
    src, bgr = golden_inputs()
    exported = run_file(export_onnx(model, src.size(3), src.size(2)), src, bgr)
    with torch.no_grad():
        eager = model(src, bgr)
    assert max_error(exported, tuple(eager)) <= EXPORT_TOLERANCE
    assert_matches_golden(exported, "mattingrefine-mobilenetv2", "sampling")


def test_export_script_writes_a_bgmv2_base_file(tmp_path, monkeypatch):
    model = load_model("mattingbase-mobilenetv2")
    output = run_script(tmp_path, monkeypatch, "mattingbase-mobilenetv2", model, "--batch-size", "2")
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    assert [x.name for x in session.get_outputs()] == ["pha", "fgr", "err", "hid"]
    assert session.get_modelmeta().custom_metadata_map == {"width": "64", "height": "48", "batch_size": "2"}
    src, bgr = torch.rand(2, 2, 3, 48, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        eager = model(src, bgr)
    assert max_error(run_file(output, src, bgr), tuple(eager)) <= EXPORT_TOLERANCE


def test_bad_settings_are_refused_with_their_names(tmp_path, monkeypatch):
    with pytest.raises(
        ValueError,
        match="invalid inference \\('fastest'\\): expected one of 'fast', 'eager', 'auto', 'onnxruntime', 'openvino', 'openvino-bf16', 'openvino-int8'",
    ):
        MattingModule("rvm-mobilenetv3", inference="fastest")
    with pytest.raises(
        ValueError,
        match=r"inference='onnxruntime' runs our RobustVideoMatting networks \(rvm-\*\); MattingBase runs",
    ):
        MattingModule("mattingbase-mobilenetv2", inference="onnxruntime")
    with pytest.raises(ValueError, match="compile=True compiles torch networks and inference='onnxruntime'"):
        MattingModule("rvm-mobilenetv3", inference="onnxruntime", compile=True)
    with pytest.raises(
        ValueError, match=r"need seg, and inference='onnxruntime' runs RVM's matting pass only"
    ):
        MattingModule("rvm-mobilenetv3", inference="onnxruntime", outputs=["pha", "seg"])
    module = MattingModule("rvm-mobilenetv3", inference="onnxruntime")
    with pytest.raises(ValueError, match="need seg, and inference='onnxruntime'"):
        module.request_outputs(["seg"])
    with pytest.raises(
        TypeError, match="export_rvm exports our RobustVideoMatting networks .*got MattingBase"
    ):
        export_rvm(MattingModule("mattingbase-mobilenetv2").net, 64, 48)
    with pytest.raises(
        TypeError, match="export_onnx exports our RobustVideoMatting, MattingBase and Matting"
    ):
        export_onnx(torch.nn.Conv2d(3, 3, 1), 64, 48)
    base = load_model("mattingbase-mobilenetv2")
    with pytest.raises(ValueError, match="need a width and height that are multiples of 4 .*got 62x48"):
        export_onnx(base, 62, 48)
    with pytest.raises(
        ValueError, match="downsample_ratio is RobustVideoMatting's; a MattingBase exports with None"
    ):
        export_onnx(base, 64, 48, downsample_ratio=0.5)
    with pytest.raises(ValueError, match="ONNX export runs on a network on the CPU, got one on meta"):
        export_onnx(load_model("mattingbase-mobilenetv2").to("meta"), 64, 48)
    with pytest.raises(
        ValueError, match="refine_mode 'thresholding' refines a number of patches that depends"
    ):
        export_onnx(load_model("mattingrefine-mobilenetv2", refine_mode="thresholding"), 64, 48)
    net = reference_model("mobilenetv3")
    with pytest.raises(ValueError, match=r"invalid width \(0\): expected an int >= 1"):
        export_rvm(net, 0, 48)
    with pytest.raises(
        ValueError, match=r"invalid downsample_ratio \(1\.5\): expected a number in \(0, 1\], or None"
    ):
        export_rvm(net, 64, 48, downsample_ratio=1.5)
    with pytest.raises(ValueError, match="path must end in .onnx, got '.*rvm.pt'"):
        save_onnx(net, tmp_path / "rvm.pt", 64, 48)
    with pytest.raises(ValueError, match="runs here on the CPU and the network is on meta: on a GPU use"):
        OnnxRuntimeRVM(load_model("rvm-mobilenetv3").to("meta"))
    network = OnnxRuntimeRVM(net)
    src = torch.rand(1, 3, 48, 64)
    with pytest.raises(ValueError, match="ONNX Runtime runs RVM's matting pass only; for seg use"):
        network(src, segmentation_pass=True)
    with pytest.raises(ValueError, match=r"runs here on the CPU in float32; got src torch.float64 on cpu"):
        network(src.double())
    with pytest.raises(
        ValueError, match=r"src must be \[N,3,H,W\] or \[N,T,3,H,W\] \(RGB\), got shape \[3, 48, 64\]"
    ):
        network(src[0])
    assert list(tmp_path.iterdir()) == []
    with monkeypatch.context() as patched:
        patched.setattr(torch.onnx, "export", lambda model, args: None)  # as torch < 2.5 has it
        with pytest.raises(
            ImportError, match=r"needs torch.onnx's dynamo exporter \(torch >= 2.5\), got torch"
        ):
            MattingModule("rvm-mobilenetv3", inference="onnxruntime")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the extra were not installed
    with pytest.raises(
        ImportError,
        match=r"need onnxruntime, onnx and onnxscript \(pip install 'lightning-matting\[onnx\]'\)",
    ):
        MattingModule("rvm-mobilenetv3", inference="onnxruntime")
