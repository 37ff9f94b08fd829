"""FLOPs of a training step, counted with `torch.utils.flop_counter`'s formulas, and what GPUs can do at most.

`count_flops(step)` runs `step` under a small dispatch mode that adds up, for every aten operation it
sees, the formula `torch.utils.flop_counter` registers for it (convolutions, matmuls, attention: forward
and backward; elementwise ops, norms and the optimiser count nothing). It skips `FlopCounterMode`'s
per-module bookkeeping, which doubled the time of a counted ResNet-110 step. The registry's
`convolution_backward` formula drops the group count from the weight gradient, so a grouped convolution's
backward came out `groups` times too large (ResNeXt-29 16x64d's step at 10.6x its forward instead of
about 3x); `_conv_backward_flop` corrects that term (fixed upstream in pytorch/pytorch#183405).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch.utils import flop_counter as fc
from torch.utils._python_dispatch import TorchDispatchMode

# Dense bf16 tensor-core peak (FLOP/s) by device name; the first matching substring wins.
PEAK_BF16 = [("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("GH200", 989e12), ("H100", 989e12),
             ("H200", 989e12), ("B200", 2250e12), ("A100", 312e12), ("L40S", 362e12), ("L4", 121e12),
             ("A10", 125e12)]


def peak_bf16(name: str) -> Optional[float]:
    """The dense bf16 peak of the GPU called `name` (e.g. torch.cuda.get_device_name()), if known."""
    return next((peak for key, peak in PEAK_BF16 if key.lower() in name.lower()), None)


@fc.shape_wrapper
def _conv_backward_flop(grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation, transposed,
                        output_padding, groups, output_mask, out_shape) -> int:
    args = (grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation, transposed, output_padding,
            groups)
    total = fc.conv_backward_flop(*args, output_mask, out_val=out_shape)
    if groups > 1 and output_mask[1]:  # each group's weight gradient sees only its own channels
        weight = fc.conv_backward_flop(*args, [False, True, False], out_val=out_shape)
        total -= weight - weight // groups
    return total


FORMULAS = {**fc.flop_registry, torch.ops.aten.convolution_backward: _conv_backward_flop}


class FlopCount(TorchDispatchMode):
    """Inside the block, `total` adds the FLOPs of every operation run (on real or fake tensors)."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        formula = FORMULAS.get(func._overloadpacket)
        if formula is None and func is not torch.ops.prim.device.default:
            # A composite op reaches us whole where autograd is off (a teacher under inference_mode:
            # aten.linear, not its addmm): count the ops it is made of.
            with self:
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
        out = func(*args, **kwargs)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def count_flops(step: Callable[[], None]) -> float:
    """FLOPs of one call of `step` (forward and backward when it trains)."""
    counter = FlopCount()
    with counter:
        step()
    return float(counter.total)
