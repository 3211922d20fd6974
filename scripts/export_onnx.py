"""Export a RobustVideoMatting network to ONNX for one frame size (needs the `[onnx]` extra).

python scripts/export_onnx.py rvm-mobilenetv3 rvm_mobilenetv3.pth --size 1280x720 --output rvm_720p.onnx
python scripts/export_onnx.py outputs/fit/.../last.ckpt --size 1920x1080 --downsample-ratio 0.25 --output a.onnx

The file takes src [N,3,H,W] (RGB in [0,1]) and the recurrent state r1i..r4i (zeros for a video's first
frame) and returns fgr, pha and r1o..r4o (feed them back as r1i..r4i); BatchNorm is folded into the
convolutions. Its metadata holds width, height, downsample_ratio and batch_size.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from lightning_matting.models import load_model
from lightning_matting.models.onnx_runtime import save_rvm


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"size must be WIDTHxHEIGHT such as 1280x720, got {text!r}"
        ) from None
    return width, height


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", help="an rvm-* variant name, or a checkpoint file to read the variant from")
    parser.add_argument("checkpoint", nargs="?", help="the weights for a variant name (.pth or .ckpt)")
    parser.add_argument("--size", type=_size, required=True, help="WIDTHxHEIGHT of the frames")
    parser.add_argument(
        "--downsample-ratio",
        type=float,
        default=None,
        help="internal scale in (0, 1]; default: longest side to 512",
    )
    parser.add_argument("--batch-size", type=int, default=1, help="videos matted side by side per call")
    parser.add_argument("--output", required=True, help="the .onnx file to write")
    args = parser.parse_args(argv)
    width, height = args.size
    net = load_model(args.model, args.checkpoint)
    path = save_rvm(net, args.output, width, height, args.downsample_ratio, args.batch_size)
    print(f"{type(net).__name__} at {width}x{height} -> {path}")


if __name__ == "__main__":
    main()
