"""Export the network of a MattingModule Lightning checkpoint as a float16 state dict (what load_model reads).

python scripts/export_weights.py outputs/fit_synthetic/.../best.ckpt lightning_matting/assets/demo.pth
"""

from __future__ import annotations

import argparse

import torch


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", help="a Lightning checkpoint of MattingModule (.ckpt)")
    parser.add_argument("output", help="where to write the state dict (.pth)")
    args = parser.parse_args()
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    net = {
        key[len("net.") :]: value.half() if value.is_floating_point() else value
        for key, value in state.items()
        if key.startswith("net.")
    }
    torch.save(net, args.output)
    print(f"{len(net)} tensors -> {args.output}")


if __name__ == "__main__":
    main()
