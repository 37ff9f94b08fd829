"""Plain L1 feature matching: the "L1" baseline of FEED (Park & Kwak 2019, Tables 1-2).

The student's final feature map is pulled towards each teacher's, with no normalisation and no
adapter:

    L = CE(y, softmax(s)) + w * sum_n mean |x^S - x_n^T|

FEED compares it against its own normalised, NTL-transformed form to show what the NTL and the
normalisation add. FEED's teachers share the student's architecture, so the final maps have the same
shape; a pair whose shapes differ is rejected (there is no adapter to reconcile them).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from ..functional import feature_l1_loss
from .base import METHODS, Hyper, StepContext
from .feature_distiller import FeatureDistiller


@METHODS.register("l1")
class L1(FeatureDistiller):
    """One stage ("train"): `loss_ce` and `loss_l1` = w * sum_teachers feature_l1_loss(final maps)."""

    name = "l1"
    paper = "Park & Kwak, 'FEED: Feature-level Ensemble for Knowledge Distillation', 2019 (L1 baseline)"
    equation = "L = CE + w * sum_n mean |x^S - x_n^T| on the final feature maps"
    stage_names = ("train",)
    min_teachers = 1
    defaults = {
        "weight": Hyper(1.0, "assumed",
                        "FEED does not give the L1 baseline's weight; 1 puts the mean absolute feature "
                        "difference (order 0.1-1 for post-ReLU maps) on the scale of the CE loss"),
    }

    def __init__(self, student, teachers=(), num_classes: int = 100, **hparams):
        super().__init__(student, teachers, num_classes=num_classes, **hparams)
        self.tap_features(["final"])
        s = self.student_shapes["final"]
        for i, shapes in enumerate(self.teacher_shapes):
            if shapes["final"] != s:
                raise ConfigError(f"l1: the student's final feature map is {tuple(s)} but teacher {i + 1}'s is "
                                  f"{tuple(shapes['final'])}; plain L1 needs equal shapes (use same-"
                                  f"architecture teachers, or method 'feed' which has an adapter)")

    def train_losses(self) -> tuple[str, ...]:
        return ("loss_ce", "loss_l1")

    def forward_train(self, images: Tensor, targets: Tensor, ctx: StepContext
                      ) -> tuple[Tensor, dict[str, Tensor]]:
        teachers = self.teacher_forwards(images)
        logits, feats = self.student_forward(images)
        total = sum(feature_l1_loss(feats["final"], t_feats["final"]) for _, t_feats in teachers)
        return logits, {"loss_ce": F.cross_entropy(logits, targets),
                        "loss_l1": self.hp["weight"] * total}
