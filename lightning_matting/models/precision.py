"""The number format eval runs our networks in: fp32, or bf16 weights and activations on CPUs that have it.

bf16 keeps fp32's range with an 8-bit mantissa: about 2-3 significant digits per operation, so outputs move
by up to a few 8-bit levels. A CPU without bf16 instructions (AVX2 only) emulates it with fp32 ones,
slower than fp32 itself; `check_bf16_device` refuses it there."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from lightning_matting.cpu import NATIVE_BF16_FLAGS, CpuInfo, has_native_bf16
from lightning_matting.models.inference import can_rewrite, inference_copy
from lightning_matting.models.rvm import RobustVideoMatting
from lightning_matting.validators import check_choice

Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16")


def check_precision(precision: object, inference: str, net: nn.Module) -> Precision:
    """`precision` if eval can run `net` in it with `inference`.

    Raises:
        ValueError: Not one of PRECISIONS; "bf16" with an `inference` other than "fast" or for a network
            `inference_copy` does not rewrite (a user's module).
    """
    check_choice("precision", precision, PRECISIONS)
    if precision == "bf16" and inference != "fast":
        raise ValueError(
            f"precision='bf16' converts the inference copy of inference='fast', got inference={inference!r}: "
            "use inference='fast' with bf16, or precision='fp32'"
        )
    if precision == "bf16" and not can_rewrite(net):
        raise ValueError(
            f"precision='bf16' converts our networks' inference copy and {type(net).__name__} has none: "
            "convert your network yourself (net.to(torch.bfloat16)) and keep precision='fp32'"
        )
    return precision


def check_bf16_device(device: torch.device, cpu: CpuInfo, setting: str = "precision='bf16'") -> None:
    """Refuse bf16 on a CPU without bf16 instructions, where it runs emulated and slower than fp32.

    Args:
        device: The device eval runs on; any other than "cpu" (a GPU) is allowed.
        cpu: The CPU (`lightning_matting.cpu.cpu_info()`), whose flags decide.
        setting: The setting that asks for bf16, as the message names it.

    Raises:
        ValueError: `device` is the CPU and `cpu` lacks every one of NATIVE_BF16_FLAGS.
    """
    if device.type == "cpu" and not has_native_bf16(cpu.flags):
        raise ValueError(
            f"{setting} needs a CPU with bf16 instructions ({' or '.join(NATIVE_BF16_FLAGS)}), and "
            f"this one, {cpu.describe()}, has neither: bf16 would run emulated with fp32 instructions, "
            "slower than fp32. Use fp32 on this CPU (precision='fp32', inference='openvino'), or run on a GPU"
        )


def bf16_copy(net: nn.Module) -> nn.Module:
    """The inference copy of `net` (`inference_copy`) run in bf16, the way that measured faster per family
    on a CPU with AMX (docs/speed.md): RVM under torch.autocast (convolutions in bf16, elementwise steps in
    fp32) with its guided-filter refiner in fp32, BGMv2 with bf16 weights and activations throughout.
    Called with float32 tensors, it returns float32 ones (RVM's recurrent state included).

    Args:
        net: MattingBase, MattingRefine or RobustVideoMatting.

    Returns:
        An independent module with `net`'s call; its outputs are within bf16 rounding of `net`'s.
    """
    fast = inference_copy(net)
    if isinstance(fast, RobustVideoMatting):
        fast.refiner = Float32(fast.refiner)  # a guided filter's variance cancels in bf16
        return BfloatAutocast(fast)
    return Bfloat16(fast.to(torch.bfloat16))


class BfloatAutocast(nn.Module):
    """Runs a float32 network under torch.autocast(bfloat16) on its inputs' device; float32 outputs.

    Args:
        net: A float32 network.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, src: Tensor, *inputs: Any, **options: Any) -> tuple[Any, ...]:
        with torch.autocast(src.device.type, torch.bfloat16):
            outputs = self.net(src, *inputs, **options)
        return tuple(_cast(x, torch.float32) for x in outputs)


class Float32(nn.Module):
    """Runs a module in float32 with autocast off: its floating-point tensor inputs cast to float32.

    Args:
        net: A float32 module.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, *inputs: Any) -> Any:
        with torch.autocast(inputs[0].device.type, enabled=False):
            return self.net(*(_cast(x, torch.float32) for x in inputs))


class Bfloat16(nn.Module):
    """Runs a bf16 network on float32 callers' terms: floating-point tensor inputs cast to bf16, outputs
    cast back to float32.

    Args:
        net: A network whose parameters and buffers are bf16 (`net.to(torch.bfloat16)`).
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, *inputs: Any, **options: Any) -> tuple[Any, ...]:
        outputs = self.net(*(_cast(x, torch.bfloat16) for x in inputs), **options)
        return tuple(_cast(x, torch.float32) for x in outputs)


def _cast(x: Any, dtype: torch.dtype) -> Any:
    return x.to(dtype) if isinstance(x, Tensor) and x.is_floating_point() else x
