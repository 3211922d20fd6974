"""Our eager fp32 network against its inference options, side by side in one process (same weights, inputs).

    python bench/models.py [--threads 1] [--iterations 7] [--sizes 512x288 1280x720]
                           [--variants rvm-mobilenetv3 mattingrefine-mobilenetv2] [--options fast fold ...]

Per variant and size: eager ms per frame (eval, no_grad: what the reference runs, bit-identical to it), then
for each option the speed ratio (eager time / option time, medians of runs interleaved with eager's, so that
a busy machine slows both alike) and the max abs error against eager fp32 over every output. Options:
  fast           what MattingModule runs in eval by default: `inference_copy` (BatchNorm folded;
                 channels_last for BGMv2; for RVM on a CPU channels_last encoder and decoder without
                 most concatenations, and the refiner in place: models/rvm_inference.py) under
                 inference_mode
  fold           BatchNorm folded only (contiguous NCHW)
  channels_last  BatchNorm folded and the whole network channels_last, for every family
  bf16           what MattingModule(precision="bf16") runs (`bf16_copy`): RVM's `fast` under
                 torch.autocast(bfloat16) with its refiner in fp32, BGMv2's `fast` with bf16 weights and
                 activations; float32 in and out
  autocast       `fast` under torch.autocast(bfloat16), every family (what Lightning's precision="bf16-mixed"
                 does; on a CPU without bf16 instructions 4-50x slower)
  bf16-weights   `fast` with bf16 weights and activations (model.to(bfloat16), inputs cast), every family
  compile        torch.compile(dynamic=False) of `fast`, as MattingModule(compile=True) (its compile time is
                 printed: a minute or more per size on a CPU, less from a warm inductor cache)
  onnxruntime    RVM only: BatchNorm folded, exported to ONNX and run by ONNX Runtime with the same thread
                 count, as MattingModule(inference="onnxruntime") (extra `[onnx]`; its export time printed)
  openvino       BatchNorm folded, converted by OpenVINO and compiled for the CPU in float32 with the same
                 thread count (RVM whole; BGMv2 its base network, the refiner in torch), as
                 MattingModule(inference="openvino") (extra `[openvino]`; its conversion time printed)
  openvino-bf16  the same compiled in bfloat16, as MattingModule(inference="openvino-bf16") (CPUs with
                 AVX512_BF16 or AMX)
  openvino-int8  the same quantized to int8 by NNCF, calibrated on the first (untimed) frame, as
                 MattingModule(inference="openvino-int8")
Weights are freshly initialised and inputs random, so refine variants run "sampling" with
prevent_oversampling off (the reference's speed test): backbone_scale 0.25, 80,000 pixels. RVM runs frame
after frame with its state carried, at the automatic downsample ratio (longest side to 512 px). CPU only.
The first line names the CPU and its relevant flags (lightning_matting.cpu) and every row its model: one
CPU's figures say nothing of another's (bf16 above all: native with avx512_bf16 or AMX, emulated without).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import Tensor, nn

from lightning_matting.cpu import cpu_info
from lightning_matting.models import VARIANTS, load_model
from lightning_matting.models.inference import ChannelsLast, fold_batch_norms, inference_copy
from lightning_matting.models.onnx_runtime import OnnxRuntimeRVM
from lightning_matting.models.openvino_runtime import OpenVinoBGMv2, OpenVinoRVM
from lightning_matting.models.precision import Bfloat16, bf16_copy
from lightning_matting.models.rvm import RobustVideoMatting, auto_downsample_ratio

OPTIONS = (
    "fast",
    "fold",
    "channels_last",
    "bf16",
    "autocast",
    "bf16-weights",
    "compile",
    "onnxruntime",
    "openvino",
    "openvino-bf16",
    "openvino-int8",
)
OPENVINO_OPTIONS = {"openvino": "f32", "openvino-bf16": "bf16", "openvino-int8": "int8"}
FIRST_CALL_BUILDS = ("compile", "onnxruntime", *OPENVINO_OPTIONS)  # the first call builds
RVM_ONLY = ("onnxruntime",)
REFINE_OPTIONS = {
    "backbone_scale": 0.25,
    "refine_mode": "sampling",
    "refine_sample_pixels": 80_000,
    "refine_prevent_oversampling": False,
}


def build(option: str, net: nn.Module) -> nn.Module:
    """The network `option` runs, made from the eager network `net`."""
    if option == "fold":
        return fold_batch_norms(copy.deepcopy(net))
    if option == "channels_last":
        return ChannelsLast(fold_batch_norms(copy.deepcopy(net)).to(memory_format=torch.channels_last))
    if option == "compile":
        return torch.compile(inference_copy(net), dynamic=False)  # as MattingModule(compile=True)
    if option == "onnxruntime":
        return OnnxRuntimeRVM(net)
    if option == "bf16":
        return bf16_copy(net)
    if option == "bf16-weights":
        return Bfloat16(inference_copy(net).to(torch.bfloat16))
    if option in OPENVINO_OPTIONS:
        precision = OPENVINO_OPTIONS[option]
        return (
            OpenVinoRVM(net, precision)
            if isinstance(net, RobustVideoMatting)
            else OpenVinoBGMv2(net, precision)
        )
    return inference_copy(net)


class Runner:
    """Calls one network frame after frame (carrying RVM's state) and keeps its last outputs and times."""

    def __init__(self, net: nn.Module, recurrent: bool, ratio: float, autocast: bool, eager: bool) -> None:
        self.net, self.recurrent, self.ratio = net, recurrent, ratio
        self.autocast, self.eager = autocast, eager
        self.state: list[Tensor | None] = [None] * 4
        self.times: list[float] = []
        self.outputs: tuple[Tensor, ...] = ()

    def __call__(self, src: Tensor, bgr: Tensor, timed: bool) -> None:
        start = time.perf_counter()
        grad_mode = torch.no_grad() if self.eager else torch.inference_mode()
        with grad_mode, torch.autocast(src.device.type, torch.bfloat16, enabled=self.autocast):
            if self.recurrent:
                outputs = self.net(src, *self.state, self.ratio)
                self.state = list(outputs[2:])
            else:
                outputs = self.net(src, bgr)
        if timed:
            self.times.append(time.perf_counter() - start)
        self.outputs = tuple(outputs)


def max_error(got: tuple[Tensor, ...], want: tuple[Tensor, ...]) -> float:
    return max((a.float() - b.float()).abs().max().item() for a, b in zip(got, want, strict=True))


def measure(variant: str, width: int, height: int, options: list[str], warmup: int, iterations: int) -> str:
    """One table row: eager ms/frame, then ratio and max error per option."""
    recurrent = variant.startswith("rvm")
    net = load_model(variant, **({} if recurrent or variant.startswith("mattingbase") else REFINE_OPTIONS))
    net = net.eval()
    ratio = auto_downsample_ratio(height, width)
    generator = torch.Generator().manual_seed(0)
    frames = [torch.rand(1, 3, height, width, generator=generator) for _ in range(warmup + iterations)]
    bgr = torch.rand(1, 3, height, width, generator=generator)
    eager = Runner(net, recurrent, ratio, autocast=False, eager=True)
    runners: dict[str, Runner] = {}
    compile_seconds = {}
    for option in options:
        if option in RVM_ONLY and not recurrent:
            continue
        start = time.perf_counter()
        runners[option] = Runner(build(option, net), recurrent, ratio, option == "autocast", eager=False)
        if option in FIRST_CALL_BUILDS:
            runners[option](frames[0], bgr, timed=False)
            compile_seconds[option] = time.perf_counter() - start
            runners[option].state = [None] * 4
    errors = dict.fromkeys(runners, 0.0)
    for index, src in enumerate(frames):
        timed = index >= warmup
        eager(src, bgr, timed)
        for option, runner in runners.items():
            runner(src, bgr, timed)
            errors[option] = max(errors[option], max_error(runner.outputs, eager.outputs))
    base = statistics.median(eager.times)
    cells = [f"{base * 1000:.0f}"]
    for option in options:
        if option not in runners:
            cells.append("RVM only")
            continue
        runner = runners[option]
        note = f" (built in {compile_seconds[option]:.0f} s)" if option in compile_seconds else ""
        cells.append(f"{base / statistics.median(runner.times):.2f}x, {errors[option]:.1e}{note}")
    return f"| {cpu_info().model} | {variant} | {width}x{height} | " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", nargs="+", default=["rvm-mobilenetv3", "mattingrefine-mobilenetv2"])
    parser.add_argument("--sizes", nargs="+", default=["512x288", "1280x720"], help="WIDTHxHEIGHT")
    parser.add_argument("--options", nargs="+", default=["fast", "fold", "channels_last"], choices=OPTIONS)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    parser.add_argument("--warmup", type=int, default=2, help="untimed frames first")
    parser.add_argument("--iterations", type=int, default=7, help="timed frames (median reported)")
    args = parser.parse_args()
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_info().describe()}; load average {' '.join(open('/proc/loadavg').read().split()[:3])}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, {args.iterations} frames")
    print(
        "| CPU | variant | size | eager ms/frame | "
        + " | ".join(f"{o}: speed, max error" for o in args.options)
        + " |"
    )
    print("|---|---|---|---|" + "---|" * len(args.options))
    for variant in args.variants:
        for size in args.sizes:
            width, height = (int(v) for v in size.split("x"))
            print(measure(variant, width, height, args.options, args.warmup, args.iterations), flush=True)
    print(f"load average after: {' '.join(open('/proc/loadavg').read().split()[:3])}")


if __name__ == "__main__":
    main()
