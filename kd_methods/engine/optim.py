"""Optimisers and learning-rate schedules, as pure functions of a phase's config and position.

The learning rate is computed from the position in the phase (epoch or iteration, per the phase's unit)
rather than kept in a scheduler object, so resuming needs no scheduler state and cannot drift.
"""
from __future__ import annotations

import math

import torch


def build_optimizer(params, optim: dict, lr_multiplier: float = 1.0) -> torch.optim.Optimizer:
    lr = optim["lr"] * lr_multiplier
    if optim["name"] == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=optim["momentum"], nesterov=optim["nesterov"],
                               weight_decay=optim["weight_decay"])
    if optim["name"] == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=optim["alpha"], eps=optim["eps"],
                                   momentum=optim["momentum"], weight_decay=optim["weight_decay"])
    if optim["name"] == "adam":  # Adam is RMSProp with momentum: beta1 = momentum, beta2 = alpha
        return torch.optim.Adam(params, lr=lr, betas=(optim["momentum"], optim["alpha"]), eps=optim["eps"],
                                weight_decay=optim["weight_decay"])
    raise ValueError(f"unknown optimiser {optim['name']!r}")


def lr_at(optim: dict, position: float, length: float, lr_multiplier: float = 1.0) -> float:
    """Learning rate at `position` (in the phase's unit, from 0) of a phase of `length` units."""
    base = optim["lr"] * lr_multiplier
    schedule = optim["schedule"]
    if schedule == "constant":
        return base
    if schedule == "multistep":
        return base * _power(optim["gamma"], sum(position >= m for m in optim["milestones"]))
    if schedule == "step":
        steps = position / optim["step_size"]
        return base * _power(optim["gamma"], math.floor(steps) if math.isfinite(steps) else steps)
    if schedule == "cosine":
        return 0.5 * base * (1 + math.cos(math.pi * min(position, length) / length))
    raise ValueError(f"unknown schedule {schedule!r}")


def _power(gamma: float, k: int) -> float:
    """gamma ** k, inf past the largest float (a growing lr: the run then stops as diverged)."""
    try:
        return gamma ** k
    except OverflowError:
        return math.inf


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
