"""Global contrast normalisation + ZCA whitening, the CIFAR/SVHN preprocessing of Maxout networks that
FitNets (Romero et al., 2015) inherits from its teacher.

GCN (per image, over all C*H*W values):  x <- scale * (x - mean(x)) / max(eps, ||x - mean(x)||_2)
ZCA (fitted on the train split):           x <- (x - mu) U diag(1 / sqrt(lambda + bias)) U^T
where Sigma = U diag(lambda) U^T is the covariance of the GCN-ed train images. `scale=55` gives pixels of
about unit variance for 32x32x3 images (55^2 / 3072 ~ 1); `bias=0.1` is the regulariser ("filter bias")
of pylearn2's ZCA used for the Maxout CIFAR-10 data. Assumption: the same constants for every dataset.
Both steps are computed in float64 on the images' device, in chunks; the result is float32.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

GCN_SCALE = 55.0
ZCA_BIAS = 0.1
CHUNK = 4096


def global_contrast_normalize(x: Tensor, scale: float = GCN_SCALE, eps: float = 1e-8) -> Tensor:
    """Per-image: subtract the image mean, divide by the image's L2 norm, multiply by `scale`.
    x: (N, ...) any real dtype; returns float64 of the same shape."""
    flat = x.reshape(len(x), -1).double()
    flat = flat - flat.mean(dim=1, keepdim=True)
    norm = flat.norm(dim=1, keepdim=True).clamp_min(eps)
    return (scale * flat / norm).reshape(x.shape)


@dataclass
class ZCA:
    mean: Tensor    # (D,) float64
    matrix: Tensor  # (D, D) float64, symmetric

    @classmethod
    def fit(cls, x: Tensor, bias: float = ZCA_BIAS) -> "ZCA":
        """Fit on x: (N, ...) float; the covariance is the biased (1/N) one."""
        n = len(x)
        flat = x.reshape(n, -1)
        mean = flat.double().mean(dim=0)
        if n < flat.shape[1]:
            # Fewer images than dimensions (tiny subsets): Sigma has rank < n, its eigenvectors with non-zero
            # eigenvalues are the right singular vectors V of the centred data, and every other direction
            # has eigenvalue 0, so the same matrix is b^-1/2 I + V diag((lambda+b)^-1/2 - b^-1/2) V^T:
            # an n x D SVD instead of a D x D eigendecomposition.
            _, s, vh = torch.linalg.svd(flat.double() - mean, full_matrices=False)
            scale = (s.pow(2) / n + bias).rsqrt() - bias ** -0.5
            eye = torch.eye(flat.shape[1], dtype=torch.float64, device=x.device)
            return cls(mean, (vh.T * scale) @ vh + bias ** -0.5 * eye)
        cov = torch.zeros(flat.shape[1], flat.shape[1], dtype=torch.float64, device=x.device)
        for chunk in flat.split(CHUNK):
            centred = chunk.double() - mean
            cov += centred.T @ centred
        eigvals, eigvecs = torch.linalg.eigh(cov / n)
        scale = (eigvals.clamp_min(0) + bias).rsqrt()
        return cls(mean, (eigvecs * scale) @ eigvecs.T)

    def __call__(self, x: Tensor) -> Tensor:
        """Whiten x: (N, ...) -> float32 of the same shape."""
        flat = x.reshape(len(x), -1)
        out = torch.empty(flat.shape, dtype=torch.float32, device=x.device)
        for i, chunk in zip(range(0, len(flat), CHUNK), flat.split(CHUNK)):
            out[i:i + len(chunk)] = ((chunk.double() - self.mean) @ self.matrix).float()
        return out.reshape(x.shape)


def gcn_zca(train: Tensor, test: Tensor, bias: float = ZCA_BIAS) -> tuple[Tensor, Tensor]:
    """GCN both splits, fit ZCA on the train split, whiten both: float32 tensors on the input device."""
    train, test = global_contrast_normalize(train), global_contrast_normalize(test)
    zca = ZCA.fit(train, bias)
    return zca(train), zca(test)
