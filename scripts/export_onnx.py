"""Export one of our networks to ONNX for one frame size (needs the `[onnx]` extra).

python scripts/export_onnx.py rvm-mobilenetv3 rvm_mobilenetv3.pth --size 1280x720 --output rvm_720p.onnx
python scripts/export_onnx.py outputs/fit/.../last.ckpt --size 1920x1080 --downsample-ratio 0.25 --output a.onnx
python scripts/export_onnx.py mattingrefine-resnet50 pytorch_resnet50.pth --size 1920x1080 --output bgm.onnx

RVM: the file takes src [N,3,H,W] (RGB in [0,1]) and the recurrent state r1i..r4i (zeros for a video's
first frame) and returns fgr, pha and r1o..r4o (feed them back as r1i..r4i). BackgroundMattingV2: src and
bgr [N,3,H,W] (sizes multiples of 4) -> the network's tuple (pha, fgr, ...), refine settings as given
(--refine-mode sampling or full). BatchNorm is folded into the convolutions; the metadata holds the size,
batch size and settings (lightning_matting/models/onnx_export.py).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from lightning_matting.models import load_model
from lightning_matting.models.onnx_export import save_onnx


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
    parser.add_argument("model", help="a variant name, or a checkpoint file to read the variant from")
    parser.add_argument("checkpoint", nargs="?", help="the weights for a variant name (.pth or .ckpt)")
    parser.add_argument("--size", type=_size, required=True, help="WIDTHxHEIGHT of the frames")
    parser.add_argument(
        "--downsample-ratio",
        type=float,
        default=None,
        help="internal scale in (0, 1]; default: longest side to 512",
    )
    parser.add_argument("--refine-mode", choices=["sampling", "full"], help="MattingRefine: its refine mode")
    parser.add_argument("--batch-size", type=int, default=1, help="frames (RVM: videos) matted per call")
    parser.add_argument("--output", required=True, help="the .onnx file to write")
    args = parser.parse_args(argv)
    width, height = args.size
    options = {} if args.refine_mode is None else {"refine_mode": args.refine_mode}
    net = load_model(args.model, args.checkpoint, **options)
    path = save_onnx(net, args.output, width, height, args.downsample_ratio, args.batch_size)
    print(f"{type(net).__name__} at {width}x{height} -> {path}")


if __name__ == "__main__":
    main()
