"""The CIFAR-10 networks of FitNets (Romero et al., ICLR 2015, Tables 1 and 5; Appendix A).

Every hidden layer is a maxout unit (Goodfellow et al. 2013): a conv (or linear map) with ``pieces``
filters per output channel followed by the max over those pieces. A "layer" below is one maxout
conv, the maxout fully-connected layer or the softmax layer, as the paper counts them.

``fitnets_maxout_teacher`` (5 layers) is Goodfellow et al.'s CIFAR-10 maxout network: maxout convs of
96/192/192 channels (8x8/8x8/5x5 kernels, padding 4/3/3, each followed by max pooling 4/2, 4/2, 2/2
with cuda-convnet's ceil rounding, so 32 -> 16 -> 7 -> 5 pixels), a maxout layer of 500 units on the
flattened 192x5x5 map, and the softmax layer.

FitNet 1-4 are thin deep stacks of 3x3 maxout convs (padding 1) in three groups at 32, 16 and 8
pixels; each of the first two groups ends with 2x2/2 max pooling and the last with an 8x8 (global)
max pooling, followed by a maxout layer of 500 units and the softmax layer. Channel plans
(FitNet 4 from the authors' released yaml, cifar10_fitnet19_all.yaml; FitNets 1-3 from the paper's
Appendix A as transcribed by two public re-implementations):

    FitNet 1 (11 layers): 16 16 16 | 32 32 32 | 48 48 64
    FitNet 2 (11 layers): 16 32 32 | 48 64 80 | 96 96 128
    FitNet 3 (13 layers): 32 48 64 64 | 80 80 80 80 | 128 128 128
    FitNet 4 (19 layers): 32 32 32 48 48 | 80 x 6 | 128 x 6

Parameters (10 classes; paper Table 5 in brackets): teacher 9.05M (~9M), FitNet 1 0.25M (~250K),
FitNet 2 0.86M (~862K), FitNet 3 1.51M (~1.6M), FitNet 4 2.55M (~2.5M).
Assumptions and deviations:
- 2 pieces in every maxout layer, the fully-connected one included. The authors' yaml uses 5 pieces in
  the 500-unit layer (FitNet 4 would have 2.74M parameters); with 2 pieces the counts and the
  multiplication counts of Table 5 are reproduced (teacher 725M, FitNet 1 30M, FitNet 2 108M,
  FitNet 4 382M), so Table 5 was evidently computed with 2. With 5 pieces the teacher would be 16.2M.
- FitNet 3 is 6% below the paper's ~1.6M (and 324M multiplications against ~392M): the transcribed
  plan and Table 5 disagree; we keep the plan rather than invent channels.
- No batch normalisation by default (the paper predates it); ``batch_norm=True`` adds BN after every
  conv. Initialisation is Kaiming normal (the paper draws weights from U(-0.005, 0.005)); the paper's
  max-norm constraints belong to the optimiser and are not part of the model.
- ``drop_rate`` applies dropout to the inputs of the two fully-connected layers.

Feature taps: "stage1".."stage3" are the outputs of the last conv of each group, after its pooling,
as in the authors' pylearn2 layers. FitNet 4's guided layer (the 11th conv, hint pair 11 <- 2) is its
"stage2" and the teacher's hint layer (its 2nd conv) is the teacher's "stage2".
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import NamedTuple, Sequence

import torch
from torch import nn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from ._base import ClassifierNet, cifar_cfg, init_weights


class ConvSpec(NamedTuple):
    out_channels: int
    kernel_size: int = 3
    padding: int = 1
    pool: tuple[int, int] | None = None  # (window, stride) of the max pooling after the maxout


def maxout(x: torch.Tensor, pieces: int) -> torch.Tensor:
    """Max over consecutive groups of ``pieces`` channels: (N, C*pieces, ...) -> (N, C, ...)."""
    return x.unflatten(1, (-1, pieces)).amax(2)


class MaxoutConv(nn.Module):
    def __init__(self, in_channels: int, spec: ConvSpec, pieces: int, batch_norm: bool):
        super().__init__()
        self.pieces = pieces
        width = spec.out_channels * pieces
        self.conv = nn.Conv2d(in_channels, width, spec.kernel_size, 1, spec.padding, bias=not batch_norm)
        self.bn = nn.BatchNorm2d(width) if batch_norm else nn.Identity()
        self.pool = (nn.MaxPool2d(spec.pool[0], spec.pool[1], ceil_mode=True) if spec.pool
                     else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(maxout(self.bn(self.conv(x)), self.pieces))


class MaxoutLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, pieces: int):
        super().__init__()
        self.pieces = pieces
        self.linear = nn.Linear(in_features, out_features * pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return maxout(self.linear(x), self.pieces)


def _pooled_size(size: int, spec: ConvSpec) -> int:
    """Spatial size after the conv and ceil-mode pooling of ``spec`` (cuda-convnet rounding)."""
    size = size + 2 * spec.padding - spec.kernel_size + 1
    if spec.pool:
        window, stride = spec.pool
        out = math.ceil((size - window) / stride) + 1
        size = out - 1 if (out - 1) * stride >= size else out
    return size


class MaxoutNet(ClassifierNet):
    """Maxout convs -> (global max pool | flatten) -> maxout fc -> linear classifier."""

    def __init__(self, plan: Sequence[ConvSpec], hidden_units: int = 500, pieces: int = 2,
                 global_max_pool: bool = True, num_classes: int = 10, in_chans: int = 3,
                 drop_rate: float = 0.0, batch_norm: bool = False, img_size: int | Sequence[int] = 32):
        size = img_size if isinstance(img_size, int) else img_size[0]
        for spec in plan:
            size = _pooled_size(size, spec)
        flat = plan[-1].out_channels * (1 if global_max_pool else size * size)
        super().__init__(num_classes, flat, drop_rate, fc_features=hidden_units)
        channels, layers = in_chans, OrderedDict()
        for i, spec in enumerate(plan, start=1):
            layers[f"conv{i}"] = MaxoutConv(channels, spec, pieces, batch_norm)
            channels = spec.out_channels
        self.features = nn.Sequential(layers)
        self.global_pool = (nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten(1)) if global_max_pool
                            else nn.Flatten(1))
        self.hidden = MaxoutLinear(flat, hidden_units, pieces)
        self.num_layers = len(plan) + 2
        stage_ends = [i for i, spec in enumerate(plan, start=1) if spec.pool or i == len(plan)]
        self.feature_points = {f"stage{j}": f"features.conv{i}" for j, i in enumerate(stage_ends, start=1)}
        self.feature_points["final"] = f"features.conv{len(plan)}"
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = nn.functional.dropout(self.global_pool(x), self.drop_rate, self.training)
        x = nn.functional.dropout(self.hidden(x), self.drop_rate, self.training)
        return x if pre_logits else self.fc(x)


def _thin(*groups: Sequence[int]) -> list[ConvSpec]:
    """3x3 maxout convs; every group but the last ends with 2x2/2 max pooling."""
    plan = []
    for g, widths in enumerate(groups):
        for k, width in enumerate(widths):
            last_of_pooled_group = k == len(widths) - 1 and g < len(groups) - 1
            plan.append(ConvSpec(width, pool=(2, 2) if last_of_pooled_group else None))
    return plan


TEACHER_PLAN = [ConvSpec(96, 8, 4, (4, 2)), ConvSpec(192, 8, 3, (4, 2)), ConvSpec(192, 5, 3, (2, 2))]
FITNET_PLANS = {
    "fitnet1": _thin((16, 16, 16), (32, 32, 32), (48, 48, 64)),
    "fitnet2": _thin((16, 32, 32), (48, 64, 80), (96, 96, 128)),
    "fitnet3": _thin((32, 48, 64, 64), (80, 80, 80, 80), (128, 128, 128)),
    "fitnet4": _thin((32, 32, 32, 48, 48), (80,) * 6, (128,) * 6),
}

_cfg = dict(num_classes=10, first_conv="features.conv1.conv", pool_size=None)
default_cfgs = generate_default_cfgs({
    "fitnets_maxout_teacher": cifar_cfg(fixed_input_size=True, **_cfg),
    **{name: cifar_cfg(**_cfg) for name in FITNET_PLANS},
})


@register_model
def fitnets_maxout_teacher(pretrained: bool = False, **kwargs) -> MaxoutNet:
    """FitNets' CIFAR-10 teacher: 3 maxout convs + maxout fc + softmax, 9M parameters."""
    return build_model_with_cfg(MaxoutNet, "fitnets_maxout_teacher", pretrained, plan=TEACHER_PLAN,
                 global_max_pool=False, **kwargs)


@register_model
def fitnet1(pretrained: bool = False, **kwargs) -> MaxoutNet:
    """FitNet 1: 11 layers, 250K parameters."""
    return build_model_with_cfg(MaxoutNet, "fitnet1", pretrained, plan=FITNET_PLANS["fitnet1"], **kwargs)


@register_model
def fitnet2(pretrained: bool = False, **kwargs) -> MaxoutNet:
    """FitNet 2: 11 layers, 862K parameters."""
    return build_model_with_cfg(MaxoutNet, "fitnet2", pretrained, plan=FITNET_PLANS["fitnet2"], **kwargs)


@register_model
def fitnet3(pretrained: bool = False, **kwargs) -> MaxoutNet:
    """FitNet 3: 13 layers, 1.5M parameters (paper: 1.6M, see the module docstring)."""
    return build_model_with_cfg(MaxoutNet, "fitnet3", pretrained, plan=FITNET_PLANS["fitnet3"], **kwargs)


@register_model
def fitnet4(pretrained: bool = False, **kwargs) -> MaxoutNet:
    """FitNet 4: 19 layers, 2.5M parameters; the FitNet of Tables 1-4."""
    return build_model_with_cfg(MaxoutNet, "fitnet4", pretrained, plan=FITNET_PLANS["fitnet4"], **kwargs)
