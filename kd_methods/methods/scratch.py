"""Training from labels only: the baseline column of every table, and how teachers, DML-free
baselines and the tolerant-teacher patriarchs without a tolerance term are trained."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .base import METHODS, Distiller, StepContext


@METHODS.register("scratch")
class Scratch(Distiller):
    """Plain supervised training: L = CE(y, softmax(s)).

    One stage ("train") over the student's parameters; no teachers, no hyper-parameters (the
    optimiser and schedule belong to the experiment spec).
    """

    name = "scratch"
    paper = "baseline: cross-entropy training on the labels"
    equation = "L = CE(y, softmax(s))"
    stage_names = ("train",)
    max_teachers = 0

    def forward_train(self, images: Tensor, targets: Tensor, ctx: StepContext
                      ) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.student(images)
        return logits, {"loss_ce": F.cross_entropy(logits, targets)}
