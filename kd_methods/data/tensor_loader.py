"""A loader for datasets small enough to live on the device (CIFAR, SVHN, MNIST, the synthetic sets).

The whole split sits on the device as one NCHW tensor (uint8 pixels, or float32 after ZCA). A batch is an
index_select, a vectorised pad + random crop + horizontal flip (one gather over the batch, no Python loop
over images) and a fused affine normalisation, all on the device. The random numbers (order, crop offsets,
flips) are drawn per epoch on CPU generators (see `sampling`), then moved to the device once.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch import Tensor

from .sampling import AUGMENT, EpochLoader, epoch_order, generator

PAD = 4
TENSOR_AUGMENTS = {"none": None, "crop_flip": "zeros", "crop_flip_reflect": "reflect"}


def _reflect(index: Tensor, size: int) -> Tensor:
    """Mirror out-of-range indices without repeating the edge (numpy/PyTorch "reflect": -1 -> 1)."""
    index = index.abs()
    return torch.where(index > size - 1, 2 * (size - 1) - index, index)


def crop_flip(images: Tensor, offsets: Tensor, flips: Tensor, pad: int = PAD, mode: str = "zeros") -> Tensor:
    """Random-crop-after-padding and horizontal flip, one offset and flip per image, in one gather.

    Equivalent to, for each image: pad by `pad` pixels on every side (with zeros, or by reflection
    without repeating the edge), take the HxW window whose top-left corner is `offsets[i] = (dy, dx)`
    (each in [0, 2*pad]), and mirror it left-right where `flips[i]` is true.
    images: (N, C, H, W) any dtype; offsets: (N, 2) int64; flips: (N,) bool; all on one device.
    """
    n, c, h, w = images.shape
    if mode == "reflect" and pad > min(h, w) - 1:
        raise ValueError(f"reflection padding of {pad} needs images larger than {pad}x{pad}")
    device = images.device
    out_cols = torch.arange(w, device=device).expand(n, w)
    out_cols = torch.where(flips[:, None], w - 1 - out_cols, out_cols)  # flip = read the crop mirrored
    rows = torch.arange(h, device=device)[None, :] + (offsets[:, :1] - pad)  # (N, H) source rows
    cols = out_cols + (offsets[:, 1:] - pad)                                # (N, W) source columns
    if mode == "reflect":
        rows, cols, inside = _reflect(rows, h), _reflect(cols, w), None
    elif mode == "zeros":
        inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
        rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
    else:
        raise ValueError(f"unknown padding mode {mode!r}")
    source = (rows[:, :, None] * w + cols[:, None, :]).reshape(n, 1, h * w).expand(n, c, h * w)
    out = images.reshape(n, c, h * w).gather(2, source).reshape(n, c, h, w)
    if inside is not None:
        out = out.masked_fill(~inside[:, None], 0)
    return out


class TensorLoader(EpochLoader):
    """Batches of `(images float32 NCHW normalised, targets int64)` on the images' device.

    train=True: shuffled, augmented, last partial global batch dropped, sharded across ranks.
    train=False: in order, not augmented, last partial batch kept, rank r gets one contiguous block.
    `set_epoch(e)` selects the epoch; its batches are a pure function of (seed, e).
    Pixels are normalised as `(images * scale - mean) / std` per channel (scale = 1/255 for uint8).
    """

    def __init__(self, images: Tensor, targets: Tensor, *, batch_size: int, mean: Sequence[float],
                 std: Sequence[float], train: bool, augment: str = "none", seed: int = 0,
                 rank: int = 0, world_size: int = 1, pad: int = PAD):
        if augment not in TENSOR_AUGMENTS:
            raise ValueError(f"unknown augmentation {augment!r}; valid: {', '.join(TENSOR_AUGMENTS)}")
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        scale = 1.0 / 255 if images.dtype == torch.uint8 else 1.0
        super().__init__(batch_size=batch_size, train=train, seed=seed, rank=rank, world_size=world_size,
                         mean=mean, std=std, scale=scale, device=images.device)
        self.images, self.targets = images, targets.to(images.device, torch.int64)
        self.num_samples, self.pad = len(images), pad
        self.padding_mode = TENSOR_AUGMENTS[augment] if train else None

    @property
    def device(self) -> torch.device:
        return self.images.device

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n, device = self.num_samples, self.device
        order = epoch_order(n, self.seed, self.epoch, shuffle=self.train).to(device)
        if self.padding_mode is not None:
            g = generator(self.seed, self.epoch, AUGMENT)
            offsets = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=g).to(device)
            flips = (torch.rand(n, generator=g) < 0.5).to(device)
        positions = self.positions()
        if not positions:
            return
        # One host-to-device copy of the epoch's positions: a blocking copy per batch would make the host
        # wait for the GPU at every step (no overlap of Python with the queued kernels).
        for pos in torch.cat(positions).to(device).split([len(p) for p in positions]):
            index = order[pos]
            images = self.images.index_select(0, index)
            if self.padding_mode is not None:
                images = crop_flip(images, offsets[pos], flips[pos], self.pad, self.padding_mode)
            yield self.normalize(images), self.targets.index_select(0, index)
