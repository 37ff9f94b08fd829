"""CIFAR ResNets of He et al. 2016 ("Deep Residual Learning", Sec. 4.2) and RepDistiller's 4x-wide ones.

Depth 6n+2: a 3x3 stem conv, three stages of n basic blocks (16/32/64 channels at 32/16/8 pixels, the
first block of stages 2 and 3 strides by 2), global average pooling and a linear classifier.
Shortcuts are the paper's option A (identity; when the shape changes, subsample by the stride and
append zero channels), which has no parameters: ResNet-56 has 0.853M and ResNet-110 1.728M parameters
with a 10-class head (the paper prints 0.85M and 1.7M).

``cifar_resnet8x4``/``cifar_resnet32x4`` follow RepDistiller's resnet8x4/resnet32x4 (used by FSP Table 2
as "32-layer ResNet with 4x channels"): a 32-channel stem, stages of 64/128/256 channels and
1x1 conv + BN projection shortcuts (option B); resnet32x4 has 7.43M parameters with 100 classes.
``cifar_resnet14x4`` is the same layout at depth 14, FSP Table 4's student (its teacher is Table 2's
resnet32x4, and FSP needs equal channel counts).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from ._base import ClassifierNet, cifar_cfg, init_weights


class ZeroPadShortcut(nn.Module):
    """Option A shortcut: x[:, :, ::s, ::s] with ``extra`` zero channels appended."""

    def __init__(self, extra_channels: int, stride: int):
        super().__init__()
        self.extra_channels, self.stride = extra_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus shortcut, then ``relu_out`` (its input is the pre-activation)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Identity()
        elif shortcut == "A":
            self.shortcut = ZeroPadShortcut(out_channels - in_channels, stride)
        else:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_channels))
        self.relu_out = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu_out(out + self.shortcut(x))


class CifarResNet(ClassifierNet):
    """ResNet-(6n+2) for 32x32 inputs; ``widths`` are the three stage widths."""

    feature_points = {"stem": "layer1:in", "stage1": "layer1", "stage2": "layer2", "stage3": "layer3",
                      "final": "layer3"}
    feature_points_preact = {f"stage{i}": f"layer{i}.-1.relu_out:in" for i in (1, 2, 3)}

    def __init__(self, depth: int, widths: tuple[int, int, int] = (16, 32, 64), stem_width: int = 16,
                 shortcut: str = "A", num_classes: int = 100, in_chans: int = 3, drop_rate: float = 0.0):
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        super().__init__(num_classes, widths[-1], drop_rate)
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_chans, stem_width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU()
        channels = stem_width
        for i, width in enumerate(widths, start=1):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(channels, width, 2 if (j == 0 and i > 1) else 1, shortcut))
                channels = width
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))


_DEPTHS = {"cifar_resnet8": 8, "cifar_resnet14": 14, "cifar_resnet20": 20, "cifar_resnet26": 26,
           "cifar_resnet32": 32, "cifar_resnet56": 56, "cifar_resnet110": 110}

default_cfgs = generate_default_cfgs({
    **{name: cifar_cfg() for name in _DEPTHS},
    "cifar_resnet8x4": cifar_cfg(),
    "cifar_resnet14x4": cifar_cfg(),
    "cifar_resnet32x4": cifar_cfg(),
})


def _resnet(name: str, pretrained: bool, **kwargs) -> CifarResNet:
    return build_model_with_cfg(CifarResNet, name, pretrained, depth=_DEPTHS[name], **kwargs)


def _resnet_x4(name: str, depth: int, pretrained: bool, **kwargs) -> CifarResNet:
    return build_model_with_cfg(CifarResNet, name, pretrained, depth=depth, widths=(64, 128, 256),
                                stem_width=32, shortcut="B", **kwargs)


@register_model
def cifar_resnet8(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-8 (n=1), FSP Table 3 student."""
    return _resnet("cifar_resnet8", pretrained, **kwargs)


@register_model
def cifar_resnet14(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-14 (n=2), FSP Table 4 student."""
    return _resnet("cifar_resnet14", pretrained, **kwargs)


@register_model
def cifar_resnet20(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-20 (n=3), 0.27M parameters."""
    return _resnet("cifar_resnet20", pretrained, **kwargs)


@register_model
def cifar_resnet26(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-26 (n=4), FSP Tables 1 and 3 teacher."""
    return _resnet("cifar_resnet26", pretrained, **kwargs)


@register_model
def cifar_resnet32(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-32 (n=5), DML's 0.5M-parameter network."""
    return _resnet("cifar_resnet32", pretrained, **kwargs)


@register_model
def cifar_resnet56(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-56 (n=9), 0.85M parameters (FEED)."""
    return _resnet("cifar_resnet56", pretrained, **kwargs)


@register_model
def cifar_resnet110(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-110 (n=18), 1.7M parameters (FEED, tolerant teacher)."""
    return _resnet("cifar_resnet110", pretrained, **kwargs)


@register_model
def cifar_resnet8x4(pretrained: bool = False, **kwargs) -> CifarResNet:
    """RepDistiller's resnet8x4 (the student of its resnet32x4 pair)."""
    return _resnet_x4("cifar_resnet8x4", 8, pretrained, **kwargs)


@register_model
def cifar_resnet14x4(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-14 with 4x channels (resnet32x4's layout, n=2): FSP Table 4's student."""
    return _resnet_x4("cifar_resnet14x4", 14, pretrained, **kwargs)


@register_model
def cifar_resnet32x4(pretrained: bool = False, **kwargs) -> CifarResNet:
    """RepDistiller's resnet32x4; FSP Table 2's "32-layer ResNet with 4x channels"."""
    return _resnet_x4("cifar_resnet32x4", 32, pretrained, **kwargs)
