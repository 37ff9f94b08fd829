"""Attention Transfer (Zagoruyko & Komodakis, "Paying More Attention to Attention", ICLR 2017).

The student learns to reproduce the teacher's spatial attention maps, Q = vec(F(A)) / ||vec(F(A))||_2
with F(A) = mean over channels of |A|^p, at the end of every group of residual blocks (Sec. 3.1,
Eq. 2). The loss (Eq. 2-3) is

    L = CE(y, softmax(s)) + beta/2 * sum_j || Q_S^j - Q_T^j ||_2^2 ,   p = 2, beta = 1000,

where the authors' code averages each term over the batch and the attention-map positions (that is
how beta = 10^3 is meant: "divided by the number of elements in the attention map and batch size").
Groups are paired in order: the student's stage j with the teacher's stage j, so both nets need the
same number of stage groups (ResNet-110 -> ResNet-20 and WRN pairs have 3).

With N teachers (FEED Table 2's "5xAT") the student gets one AT term per teacher, summed.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from ..functional import at_loss
from .base import METHODS, Hyper, StepContext
from .feature_distiller import FeatureDistiller, stage_groups


@METHODS.register("at")
class AT(FeatureDistiller):
    """One stage ("train"): `loss_ce` and `loss_at` = beta/2 * sum_teachers sum_groups at_loss."""

    name = "at"
    paper = "Zagoruyko & Komodakis, 'Paying More Attention to Attention', ICLR 2017"
    equation = "Eq. 2: L = CE + beta/2 * sum_j ||Q_S^j/||Q_S^j|| - Q_T^j/||Q_T^j|| ||_p^2, Q = mean_c |A_c|^p"
    stage_names = ("train",)
    min_teachers = 1
    defaults = {
        "beta": Hyper(1000.0, "paper", "Sec. 4.1: beta = 10^3, with each term averaged over batch and "
                                       "attention-map positions; each pair is weighted beta/2 = 500"),
        "p": Hyper(2, "paper", "attention mapping F_mean^p with p = 2 (Sec. 4.1)"),
    }
    deviations = (
        "Several teachers (FEED's 5xAT): one AT term per teacher, summed; the AT paper uses one teacher.",
        "If a paired student/teacher group differs in spatial size, the larger feature map is "
        "average-pooled to the smaller's size before its attention map is taken.",
    )

    def __init__(self, student, teachers=(), num_classes: int = 100, **hparams):
        super().__init__(student, teachers, num_classes=num_classes, **hparams)
        groups = stage_groups(student)
        for i, t in enumerate(self.teachers):
            if stage_groups(t) != groups:
                raise ConfigError(f"at: the student has {len(groups)} stage groups but teacher {i + 1} has "
                                  f"{len(stage_groups(t))}; AT pairs groups one to one, so use nets with "
                                  f"the same number of stages")
        self.tap_features(groups)

    def train_losses(self) -> tuple[str, ...]:
        return ("loss_ce", "loss_at")

    def forward_train(self, images: Tensor, targets: Tensor, ctx: StepContext
                      ) -> tuple[Tensor, dict[str, Tensor]]:
        teachers = self.teacher_forwards(images)
        logits, feats = self.student_forward(images)
        p = self.hp["p"]
        total = sum(at_loss(feats[g], t_feats[g], p) for _, t_feats in teachers for g in self.points)
        return logits, {"loss_ce": F.cross_entropy(logits, targets),
                        "loss_at": self.hp["beta"] / 2 * total}
