"""MobileNet v1 (Howard et al. 2017, Table 1) adapted to 32x32 CIFAR images, for DML Tables 1, 2 and 4.

The layers and widths are MobileNet v1's at width multiplier 1: a 3x3 conv to 32 channels, then 13
depthwise-separable blocks (3x3 depthwise conv-BN-ReLU, 1x1 pointwise conv-BN-ReLU) up to 1024
channels, global average pooling and a linear classifier.
Adaptation (an assumption: DML does not describe its CIFAR MobileNet): the first conv has stride 1
instead of 2; the four stride-2 depthwise convs of blocks 2, 4, 6 and 12 are kept, so a 32x32 image
ends as a 2x2 map (ImageNet's 224 ends at 7x7). Strides do not change the parameter count:
3.31M with 100 classes, matching DML Table 1's 3.3M.

Stages group the blocks by resolution: layer1 (32x32, 64 ch), layer2 (16x16, 128), layer3 (8x8, 256),
layer4 (4x4, 512), layer5 (2x2, 1024).
"""
from __future__ import annotations

import torch
from torch import nn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from ._base import ClassifierNet, cifar_cfg, init_weights

# (out_channels, stride) of the 13 depthwise-separable blocks, grouped into stages by resolution.
_STAGES = (
    ((64, 1),),
    ((128, 2), (128, 1)),
    ((256, 2), (256, 1)),
    ((512, 2),) + ((512, 1),) * 5,
    ((1024, 2), (1024, 1)),
)


class DepthwiseSeparable(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv_dw = nn.Conv2d(in_channels, in_channels, 3, stride, 1, groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU()
        self.conv_pw = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu_out = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv_dw(x)))
        return self.relu_out(self.bn2(self.conv_pw(x)))


class CifarMobileNet(ClassifierNet):
    feature_points = {"stem": "layer1:in", **{f"stage{i}": f"layer{i}" for i in range(1, 6)},
                      "final": "layer5"}
    feature_points_preact = {f"stage{i}": f"layer{i}.-1.relu_out:in" for i in range(1, 6)}

    def __init__(self, num_classes: int = 100, in_chans: int = 3, drop_rate: float = 0.0):
        super().__init__(num_classes, _STAGES[-1][-1][0], drop_rate)
        self.conv1 = nn.Conv2d(in_chans, 32, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.relu = nn.ReLU()
        channels = 32
        for i, stage in enumerate(_STAGES, start=1):
            blocks = []
            for out_channels, stride in stage:
                blocks.append(DepthwiseSeparable(channels, out_channels, stride))
                channels = out_channels
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for i in range(1, 6):
            x = getattr(self, f"layer{i}")(x)
        return x


default_cfgs = generate_default_cfgs({"cifar_mobilenet": cifar_cfg(pool_size=(2, 2))})


@register_model
def cifar_mobilenet(pretrained: bool = False, **kwargs) -> CifarMobileNet:
    """MobileNet v1 for CIFAR (stride-1 stem), 3.3M parameters with 100 classes (DML Table 1)."""
    return build_model_with_cfg(CifarMobileNet, "cifar_mobilenet", pretrained, **kwargs)
