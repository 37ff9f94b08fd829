"""Wide ResNets of Zagoruyko & Komodakis 2016 ("Wide Residual Networks", Table 1) for CIFAR.

WRN-d-k: a 3x3 stem conv to 16 channels, three stages of n = (d-4)/6 pre-activation basic blocks of
16k/32k/64k channels (BN-ReLU-conv3x3-BN-ReLU-[dropout]-conv3x3), a final BN-ReLU, global average
pooling and a linear classifier. The stride sits on the first conv of a block; when the shape changes
the shortcut is a 1x1 conv applied to the block's activated input (the authors' code). WRN-28-10 has
36.48M parameters with 10 classes and 5.24 GMACs per 32x32 image.

Feature taps: stage outputs are the block sums (already pre-activation); "final" is the output of the
final BN-ReLU (``relu``), the map global pooling sees.
"""
from __future__ import annotations

import torch
from torch import nn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from ._base import ClassifierNet, cifar_cfg, init_weights


class WideBasicBlock(nn.Module):
    """Pre-activation block: x + conv(relu(bn(conv(relu(bn(x)))))), stride on the first conv."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, drop_rate: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU()
        self.dropout = nn.Dropout(drop_rate)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.shortcut = (None if stride == 1 and in_channels == out_channels
                         else nn.Conv2d(in_channels, out_channels, 1, stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = self.relu1(self.bn1(x))
        out = self.conv2(self.dropout(self.relu2(self.bn2(self.conv1(activated)))))
        return out + (x if self.shortcut is None else self.shortcut(activated))


class WideResNet(ClassifierNet):
    """WRN-depth-widen_factor; ``block_drop_rate`` is the dropout between a block's convs."""

    feature_points = {"stem": "layer1:in", "stage1": "layer1", "stage2": "layer2", "stage3": "layer3",
                      "final": "relu"}
    feature_points_preact = {}  # block outputs are already taken before any activation

    def __init__(self, depth: int, widen_factor: int, num_classes: int = 100, in_chans: int = 3,
                 drop_rate: float = 0.0, block_drop_rate: float = 0.0):
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        widths = (16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        super().__init__(num_classes, widths[-1], drop_rate)
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(in_chans, 16, 3, 1, 1, bias=False)
        channels = 16
        for i, width in enumerate(widths, start=1):
            blocks = []
            for j in range(n):
                stride = 2 if (j == 0 and i > 1) else 1
                blocks.append(WideBasicBlock(channels, width, stride, block_drop_rate))
                channels = width
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        return self.relu(self.bn(x))


default_cfgs = generate_default_cfgs({
    "cifar_wrn_16_2": cifar_cfg(),
    "cifar_wrn_40_2": cifar_cfg(),
    "cifar_wrn_28_10": cifar_cfg(),
})


@register_model
def cifar_wrn_16_2(pretrained: bool = False, **kwargs) -> WideResNet:
    """WRN-16-2 (0.70M parameters with 100 classes), RepDistiller's student."""
    return build_model_with_cfg(WideResNet, "cifar_wrn_16_2", pretrained, depth=16, widen_factor=2,
                                **kwargs)


@register_model
def cifar_wrn_40_2(pretrained: bool = False, **kwargs) -> WideResNet:
    """WRN-40-2 (2.26M parameters with 100 classes), RepDistiller's teacher."""
    return build_model_with_cfg(WideResNet, "cifar_wrn_40_2", pretrained, depth=40, widen_factor=2,
                                **kwargs)


@register_model
def cifar_wrn_28_10(pretrained: bool = False, **kwargs) -> WideResNet:
    """WRN-28-10: 36.5M parameters (FEED, DML)."""
    return build_model_with_cfg(WideResNet, "cifar_wrn_28_10", pretrained, depth=28, widen_factor=10,
                                **kwargs)
