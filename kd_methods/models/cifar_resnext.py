"""CIFAR ResNeXt-29 of Xie et al. 2017 ("Aggregated Residual Transformations", Sec. 5.3).

A 3x3 stem conv to 64 channels, three stages of 3 bottleneck blocks with 256/512/1024 output channels
(widen factor 4), global average pooling and a linear classifier. In stage i a block is
1x1 conv to D = C * d * 2^(i-1) channels -> grouped 3x3 conv (C groups, the stride sits here) ->
1x1 conv to the output width, each followed by BN, with ReLU after the sum; cardinality C,
bottleneck width d = 64. Projection shortcuts (1x1 conv + BN) where the shape changes.
ResNeXt-29 16x64d has 68.16M parameters and 8x64d 34.43M with 10 classes (paper: 68.1M, 34.4M).
"""
from __future__ import annotations

import torch
from torch import nn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from ._base import ClassifierNet, cifar_cfg, init_weights


class ResNeXtBottleneck(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, cardinality: int, width: int):
        super().__init__()
        inner = cardinality * width
        self.conv1 = nn.Conv2d(in_channels, inner, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(inner, inner, 3, stride, 1, groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm2d(inner)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(inner, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        if stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_channels))
        self.relu_out = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu_out(out + self.shortcut(x))


class CifarResNeXt(ClassifierNet):
    feature_points = {"stem": "layer1:in", "stage1": "layer1", "stage2": "layer2", "stage3": "layer3",
                      "final": "layer3"}
    feature_points_preact = {f"stage{i}": f"layer{i}.-1.relu_out:in" for i in (1, 2, 3)}

    def __init__(self, cardinality: int, base_width: int = 64, depth: int = 29, widen_factor: int = 4,
                 num_classes: int = 100, in_chans: int = 3, drop_rate: float = 0.0):
        if (depth - 2) % 9:
            raise ValueError(f"CIFAR ResNeXt depth must be 9n+2, got {depth}")
        widths = (64 * widen_factor, 128 * widen_factor, 256 * widen_factor)
        super().__init__(num_classes, widths[-1], drop_rate)
        n = (depth - 2) // 9
        self.conv1 = nn.Conv2d(in_chans, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        channels = 64
        for i, out_channels in enumerate(widths, start=1):
            blocks = []
            for j in range(n):
                stride = 2 if (j == 0 and i > 1) else 1
                width = base_width * 2 ** (i - 1)
                blocks.append(ResNeXtBottleneck(channels, out_channels, stride, cardinality, width))
                channels = out_channels
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))


default_cfgs = generate_default_cfgs({
    "cifar_resnext29_8x64d": cifar_cfg(),
    "cifar_resnext29_16x64d": cifar_cfg(),
})


@register_model
def cifar_resnext29_8x64d(pretrained: bool = False, **kwargs) -> CifarResNeXt:
    """ResNeXt-29 8x64d, 34.4M parameters."""
    return build_model_with_cfg(CifarResNeXt, "cifar_resnext29_8x64d", pretrained, cardinality=8, **kwargs)


@register_model
def cifar_resnext29_16x64d(pretrained: bool = False, **kwargs) -> CifarResNeXt:
    """ResNeXt-29 16x64d, 68.1M parameters (FEED)."""
    return build_model_with_cfg(CifarResNeXt, "cifar_resnext29_16x64d", pretrained, cardinality=16, **kwargs)
