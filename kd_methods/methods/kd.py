"""Knowledge distillation (Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", 2015).

The student matches the teacher's class probabilities softened by a temperature T, alongside the
labels (Sec. 2):

    L = CE(y, softmax(s)) + lambda * T^2 * KL(softmax(t/T) || softmax(s/T))

The T^2 factor keeps the soft term's gradients on the same scale whatever T is (Sec. 2.1). With
several teachers the target is the ensemble's average softened prediction 1/N sum_n softmax(t_n/T)
(Sec. 2: "an ensemble ... distilled into a single model"); this is the "KD" column of FEED Table 2,
distilled from the five scratch models.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from ..functional import ensemble_kd_loss
from .base import METHODS, Distiller, Hyper, StepContext


@METHODS.register("kd")
class KD(Distiller):
    """One stage ("train"): `loss_ce` = CE(y, softmax(s)), `loss_kd` = lambda * T^2 * KL(p_T || p_S)."""

    name = "kd"
    paper = "Hinton, Vinyals & Dean, 'Distilling the Knowledge in a Neural Network', NIPS DL workshop 2015"
    equation = "Sec. 2: L = CE(y, s) + lambda * T^2 * KL(softmax(t/T) || softmax(s/T)); N teachers: average of softmax(t_n/T)"
    stage_names = ("train",)
    min_teachers = 1
    defaults = {
        "temperature": Hyper(4.0, "assumed",
                             "Hinton et al. tune T per task and FEED does not report its KD settings; 4 is "
                             "the usual CIFAR value (RepDistiller, mdistiller)"),
        "weight": Hyper(1.0, "assumed",
                        "lambda on the T^2-scaled soft term; not reported by FEED; 1 weighs labels and "
                        "soft targets equally"),
    }

    def __init__(self, student, teachers=(), num_classes: int = 100, **hparams):
        super().__init__(student, teachers, num_classes=num_classes, **hparams)
        if not self.hp["temperature"] > 0:
            raise ConfigError(f"{self.name}: temperature must be > 0, got {self.hp['temperature']!r}")

    def train_losses(self) -> tuple[str, ...]:
        return ("loss_ce", "loss_kd")

    def forward_train(self, images: Tensor, targets: Tensor, ctx: StepContext
                      ) -> tuple[Tensor, dict[str, Tensor]]:
        teacher_logits = self.teacher_logits(images)
        logits = self.student(images)
        soft = ensemble_kd_loss(logits, teacher_logits, self.hp["temperature"])
        return logits, {"loss_ce": F.cross_entropy(logits, targets),
                        "loss_kd": self.hp["weight"] * soft}
