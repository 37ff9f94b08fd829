"""FitNets' MNIST networks (Romero et al., ICLR 2015, Table 4): 1x28x28 inputs, 10 classes.

Both are stacks of maxout convolutions (``MaxoutConv`` of ``fitnets.py``: conv with ``pieces`` filters per
output channel, max over the pieces, then max pooling with cuda-convnet's ceil rounding) whose last map
is flattened straight into the softmax layer (no hidden fully-connected layer). Each layer has its own
number of pieces.

``fitnets_mnist_teacher`` is the MNIST maxout network of Goodfellow et al. (2013), which FitNets uses as
its teacher (pylearn2 ``scripts/papers/maxout/mnist.yaml``)::

    48 ch x 2 pieces, 8x8, pad 0, pool 4/2   28 -> 21 -> 10
    48 ch x 2 pieces, 8x8, pad 3, pool 4/2   10 ->  9 ->  4
    24 ch x 4 pieces, 5x5, pad 3, pool 2/2    4 ->  6 ->  3      softmax on 24x3x3

``fitnet_mnist`` is the authors' MNIST FitNet (their released ``yaml/MNIST_fitnet_valid.yaml``)::

    16x2 5x5 | 16x2 3x3 pool 4/2 | 16x2 5x5 pad 3 | 16x2 3x3 pool 4/2 | 12x4 3x3 pad 3 | 12x4 3x3 pool 2/2
    28 -> 24 -> 10 -> 12 -> 4 -> 8 -> 3                              softmax on 12x3x3

Parameters (paper in brackets): teacher 419K (~361K), FitNet 36K (~30K). The differences are not
explained by the released configurations (pylearn2's untied biases would add more, not fewer).
Feature taps "stage1".."stage3" are the outputs of the pooled layers; the authors' hint pair (FitNet
layer h3 <- teacher layer h1) is "stage2" <- "stage2". Initialisation: Kaiming normal (the paper draws
from U(-0.005, 0.005)); no dropout or max-norm constraints (the teacher's recipe used both).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from ._base import ClassifierNet, cifar_cfg, init_weights
from .fitnets import ConvSpec, MaxoutConv

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)

# (conv, pieces) per layer.
TEACHER_PLAN = [(ConvSpec(48, 8, 0, (4, 2)), 2), (ConvSpec(48, 8, 3, (4, 2)), 2), (ConvSpec(24, 5, 3, (2, 2)), 4)]
FITNET_PLAN = [(ConvSpec(16, 5, 0), 2), (ConvSpec(16, 3, 0, (4, 2)), 2), (ConvSpec(16, 5, 3), 2),
               (ConvSpec(16, 3, 0, (4, 2)), 2), (ConvSpec(12, 3, 3), 4), (ConvSpec(12, 3, 0, (2, 2)), 4)]


class MnistMaxoutNet(ClassifierNet):
    """Maxout convs with per-layer pieces -> flatten -> linear classifier (the softmax layer)."""

    # 1-channel 28x28 inputs and narrow maps: on a 2-core EPYC with bf16, 100 real-MNIST steps took
    # 10.5 s (FitNet) and 18.5 s (teacher) in channels_last, 7.0 s and 14.5 s in NCHW.
    prefers_channels_last = False

    def __init__(self, plan: Sequence[tuple[ConvSpec, int]], num_classes: int = 10, in_chans: int = 1,
                 img_size: int | Sequence[int] = 28, drop_rate: float = 0.0):
        height, width = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)[-2:]
        features = nn.Sequential()
        channels = in_chans
        for i, (spec, pieces) in enumerate(plan, start=1):
            features.add_module(f"conv{i}", MaxoutConv(channels, spec, pieces, batch_norm=False))
            channels = spec.out_channels
        with torch.no_grad():
            flat = features(torch.zeros(1, in_chans, height, width)).numel()
        super().__init__(num_classes, flat, drop_rate)
        self.features = features
        self.global_pool = nn.Flatten(1)
        pooled = [i for i, (spec, _) in enumerate(plan, start=1) if spec.pool]
        self.feature_points = {f"stage{j}": f"features.conv{i}" for j, i in enumerate(pooled, start=1)}
        self.feature_points["final"] = f"features.conv{len(plan)}"
        init_weights(self)

    def forward_features(self, x):
        return self.features(x)


_cfg = dict(num_classes=10, input_size=(1, 28, 28), mean=MNIST_MEAN, std=MNIST_STD,
            first_conv="features.conv1.conv", pool_size=None, fixed_input_size=True)
default_cfgs = generate_default_cfgs({"fitnets_mnist_teacher": cifar_cfg(**_cfg), "fitnet_mnist": cifar_cfg(**_cfg)})


@register_model
def fitnets_mnist_teacher(pretrained: bool = False, **kwargs) -> MnistMaxoutNet:
    """Goodfellow et al.'s MNIST maxout network, FitNets' Table 4 teacher (419K parameters)."""
    return build_model_with_cfg(MnistMaxoutNet, "fitnets_mnist_teacher", pretrained, plan=TEACHER_PLAN, **kwargs)


@register_model
def fitnet_mnist(pretrained: bool = False, **kwargs) -> MnistMaxoutNet:
    """The authors' 6-layer MNIST FitNet, Table 4 student (36K parameters)."""
    return build_model_with_cfg(MnistMaxoutNet, "fitnet_mnist", pretrained, plan=FITNET_PLAN, **kwargs)
