"""ONNX Runtime against our eager torch network, RVM with its recurrent state as explicit inputs and outputs.

    pip install --target /tmp/onnxpkgs -c constraints.txt onnxruntime onnx onnxscript   # not dependencies
    PYTHONPATH=/tmp/onnxpkgs python bench/onnx_rvm.py [--variant rvm-mobilenetv3] [--threads 1]

Per size: exports the network at that size (the state shapes depend on it) with torch.onnx (dynamo), runs
the same frames through eager torch and an ONNX Runtime CPU session with the same thread count, frame after
frame with the state carried, interleaved; prints the medians, their ratio and the max abs error of fgr and
pha. Measured only: the project has no ONNX path (bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import onnxruntime
import torch
from torch import Tensor, nn

from lightning_matting.models import load_model
from lightning_matting.models.rvm import auto_downsample_ratio


class Step(nn.Module):
    """One call of RVM at a fixed downsample ratio: (src, r1..r4) -> (fgr, pha, r1..r4)."""

    def __init__(self, net: nn.Module, ratio: float) -> None:
        super().__init__()
        self.net, self.ratio = net, ratio

    def forward(self, src: Tensor, r1: Tensor, r2: Tensor, r3: Tensor, r4: Tensor) -> tuple[Tensor, ...]:
        return tuple(self.net(src, r1, r2, r3, r4, self.ratio))


def measure(variant: str, width: int, height: int, threads: int, frames: int, folder: Path) -> str:
    net = load_model(variant).eval()
    ratio = auto_downsample_ratio(height, width)
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.rand(1, 3, height, width, generator=generator) for _ in range(frames + 2)]
    with torch.no_grad():
        _, _, *zeros = net(inputs[0], None, None, None, None, ratio)
    zeros = [torch.zeros_like(state) for state in zeros]
    path = folder / f"{variant}_{width}x{height}.onnx"
    start = time.perf_counter()
    names = ["src", "r1", "r2", "r3", "r4"]
    torch.onnx.export(Step(net, ratio), (inputs[0], *zeros), path, input_names=names, dynamo=True)
    export_seconds = time.perf_counter() - start
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    torch_state, ort_state = list(zeros), [state.numpy() for state in zeros]
    torch_times, ort_times, error = [], [], 0.0
    for index, src in enumerate(inputs):
        start = time.perf_counter()
        with torch.no_grad():
            fgr, pha, *torch_state = net(src, *torch_state, ratio)
        middle = time.perf_counter()
        outputs = session.run(None, dict(zip(names, [src.numpy(), *ort_state], strict=True)))
        end = time.perf_counter()
        ort_state = outputs[2:]
        for got, want in zip(outputs[:2], (fgr, pha), strict=True):
            error = max(error, (torch.from_numpy(got) - want).abs().max().item())
        if index >= 2:
            torch_times.append(middle - start)
            ort_times.append(end - middle)
    eager, ort = statistics.median(torch_times), statistics.median(ort_times)
    return (
        f"| {variant} | {width}x{height} | {eager * 1000:.0f} | {ort * 1000:.0f} | {eager / ort:.2f}x "
        f"| {error:.1e} | {export_seconds:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variant", default="rvm-mobilenetv3", choices=["rvm-mobilenetv3", "rvm-resnet50"])
    parser.add_argument("--sizes", nargs="+", default=["512x288", "1280x720"], help="WIDTHxHEIGHT")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--frames", type=int, default=7, help="timed frames (median reported)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {args.threads} thread(s)")
    print("| variant | size | eager ms/frame | onnxruntime ms/frame | speed | max error | export s |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            width, height = (int(v) for v in size.split("x"))
            print(measure(args.variant, width, height, args.threads, args.frames, Path(folder)), flush=True)


if __name__ == "__main__":
    main()
