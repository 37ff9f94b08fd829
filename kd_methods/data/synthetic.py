"""Synthetic image sets with a known class hierarchy: the embedded default for smoke runs and CI.

`synthetic100` mimics CIFAR-100's superclass structure: 100 fine classes in 20 coarse groups of 5;
`synthetic10` has 10 classes in 5 groups of 2; `synthetic_mnist` is the MNIST-shaped (1x28x28) variant
with 10 classes in 5 groups of 2. Each image is

    prototype of its group  (base colour + three low-frequency colour waves, randomly shifted)
  + pattern of its class    (oriented colour stripes with a random phase + a colour blob near a
                             class-specific position), scaled by a random per-image strength
  + pixel noise, with a random contrast,

so the group is easy to tell (large, distinctive prototypes), while the classes of a group share their
prototype and differ only in the smaller pattern: a trained teacher's secondary probabilities go to the
other members of the group, which is the "dark knowledge" distillation relies on. Weak-pattern images are
genuinely ambiguous within their group, so no classifier reaches 100%.

Generation is deterministic in (seed, split, index): the class parameters depend on the seed only, each
per-image quantity comes from its own seeded stream, so the first n images of a larger set equal the set
of size n. Labels cycle through the classes (image i has label i % num_classes), so every prefix is
stratified. 12k CIFAR-shaped images take about a second.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import Tensor

SPLITS = {"train": 1, "test": 2}


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(list(keys)))


@functools.lru_cache(maxsize=8)
def make_synthetic(num_classes: int, groups: int, n: int, split: str, seed: int = 0,
                   channels: int = 3, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """`(images uint8 (n, channels, size, size), labels int64 (n,))`; cached in memory per arguments.

    Arrays are returned read-only (they are shared through the cache).
    """
    if num_classes % groups:
        raise ValueError(f"{num_classes} classes do not split into {groups} equal groups")
    per_group = num_classes // groups
    tag = (seed, num_classes, groups, channels, size)
    yy, xx = np.meshgrid(np.arange(size) / size, np.arange(size) / size, indexing="ij")  # in [0, 1)

    # Class-level parameters: the same for every split.
    p = _rng(*tag, 0)
    base = p.uniform(0.25, 0.75, (groups, channels))
    freq = p.integers(-2, 3, (groups, 3, 2))
    freq[(freq == 0).all(-1)] = (1, 1)                           # no constant "waves"
    wave_amp = p.normal(0.0, 0.14, (groups, 3, channels))
    wave_phase = p.uniform(0, 2 * math.pi, (groups, 3))
    group_turn = p.uniform(0, math.pi, groups)
    angle = group_turn[:, None] + math.pi * np.arange(per_group)[None, :] / per_group  # spread in a group
    angle = angle.reshape(-1)
    stripe_freq = p.uniform(2.5, 4.5, num_classes)
    stripe_col = p.normal(0.0, 0.11, (num_classes, channels))
    blob_pos = p.uniform(0.2, 0.8, (num_classes, 2))
    blob_col = p.normal(0.0, 0.2, (num_classes, channels))

    # Per-image draws, one stream each, so a prefix of a larger set is the smaller set.
    s = SPLITS[split]
    labels = np.arange(n) % num_classes
    group = labels // per_group
    shift = _rng(*tag, s, 1).uniform(-0.1, 0.1, (n, 2))            # prototype shift (fraction of the side)
    stripe_phase = _rng(*tag, s, 2).uniform(0, 2 * math.pi, n)
    blob_jitter = _rng(*tag, s, 3).normal(0.0, 0.06, (n, 2))
    strength = _rng(*tag, s, 4).uniform(0.3, 1.0, n)
    contrast = _rng(*tag, s, 5).uniform(0.8, 1.2, n)
    noise = _rng(*tag, s, 6).standard_normal((n, channels, size, size), dtype=np.float32) * np.float32(0.07)

    f32 = np.float32
    yy, xx = yy.astype(f32), xx.astype(f32)
    y = yy[None] - shift[:, :1, None].astype(f32)                  # (n, size, size) shifted coordinates
    x = xx[None] - shift[:, 1:, None].astype(f32)
    img = noise + base[group].astype(f32)[:, :, None, None]
    for k in range(3):
        fy, fx = (freq[group, k, i].astype(f32)[:, None, None] for i in (0, 1))
        wave = np.cos(f32(2 * math.pi) * (fy * y + fx * x) + wave_phase[group, k].astype(f32)[:, None, None])
        img += wave_amp[group, k].astype(f32)[:, :, None, None] * wave[:, None]
    a = angle[labels]
    direction = (np.sin(a)[:, None, None] * yy + np.cos(a)[:, None, None] * xx).astype(f32)
    stripes = np.cos(f32(2 * math.pi) * stripe_freq[labels].astype(f32)[:, None, None] * direction
                     + stripe_phase.astype(f32)[:, None, None])
    centre = (blob_pos[labels] + blob_jitter).astype(f32)
    blob = np.exp(((yy - centre[:, :1, None]) ** 2 + (xx - centre[:, 1:, None]) ** 2) * f32(-0.5 / 0.09 ** 2))
    weight = strength.astype(f32)[:, None, None, None]
    img += (weight * stripe_col[labels].astype(f32)[:, :, None, None]) * stripes[:, None]
    img += (weight * blob_col[labels].astype(f32)[:, :, None, None]) * blob[:, None]
    img = (img - f32(0.5)) * contrast.astype(f32)[:, None, None, None] + f32(0.5)
    images = np.clip(np.rint(img * f32(255)), 0, 255).astype(np.uint8)
    images.flags.writeable = False
    labels = labels.astype(np.int64)
    labels.flags.writeable = False
    return images, labels


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 NCHW images, in [0, 1] units."""
    x = images.astype(np.float64) / 255
    return tuple(x.mean(axis=(0, 2, 3)).tolist()), tuple(x.std(axis=(0, 2, 3)).tolist())


def make_synthetic_imagenet(n: int, split: str, seed: int = 0, num_classes: int = 1000,
                            size: int = 224) -> tuple[Tensor, Tensor]:
    """A tiny ImageNet-shaped set for throughput benchmarks and smoke tests: each class is a random 7x7
    colour layout upsampled to `size`, plus noise. Returns (uint8 (n, 3, size, size), int64 labels)."""
    g = torch.Generator().manual_seed(seed)
    layouts = torch.rand(num_classes, 3, 7, 7, generator=g)
    g.manual_seed(seed * 3 + SPLITS[split])
    labels = torch.randint(0, num_classes, (n,), generator=g)
    images = torch.empty(n, 3, size, size, dtype=torch.uint8)
    for chunk in torch.arange(n).split(64):  # bounded float memory
        big = torch.nn.functional.interpolate(layouts[labels[chunk]], size=(size, size), mode="bilinear",
                                              align_corners=False)
        big += 0.1 * torch.randn(big.shape, generator=g)
        images[chunk] = (big.clamp(0, 1) * 255).round().to(torch.uint8)
    return images, labels
