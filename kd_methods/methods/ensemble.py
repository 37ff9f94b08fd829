"""Label ensembles: the average of several trained networks' predictions.

FEED Table 2's "Ens" column (the 5 scratch models), the ensembles of generations in the tolerant-teacher
paper and BAN, and FSP's ensembles of students. Nothing is trained: the members arrive as teachers.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from .base import METHODS, Distiller, StepContext


class SoftmaxAverage(nn.Module):
    """p(x) = 1/N sum_n softmax(f_n(x)), returned as log p(x).

    The log keeps the output usable as logits: softmax(log p) = p, argmax and top-k are those of p,
    and cross-entropy on it is the ensemble's negative log-likelihood. Members are kept in a plain
    list (not registered), so the ensemble has no parameters and no state_dict of its own; they stay
    in eval mode whatever mode the ensemble is switched to.
    """

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        if not members:
            raise ValueError("SoftmaxAverage needs at least one member")
        self.members = list(members)

    @torch.inference_mode()
    def forward(self, images: Tensor) -> Tensor:
        probs = torch.stack([m(images).float().softmax(dim=1) for m in self.members])
        return probs.mean(0).log()

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.members:
            m.eval()
        return self

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        for m in self.members:
            m._apply(fn, *args, **kwargs)
        return self


@METHODS.register("ensemble")
class Ensemble(Distiller):
    """Evaluation-only method: the members are the teachers; `eval_models()` gives their softmax average.

    There is no student and no stage (`stages()` is empty), so a run of this method only evaluates.
    Averaging probabilities (not logits) is the usual label ensemble and what FEED's "Ens" means.
    """

    name = "ensemble"
    paper = "label ensemble of trained networks (FEED Table 2 'Ens'; ensembles in TSD, BAN and FSP)"
    equation = "p(x) = 1/N sum_n softmax(f_n(x))"
    stage_names = ()
    min_teachers = 2

    def __init__(self, student: nn.Module | None = None, teachers: Sequence[nn.Module] = (),
                 num_classes: int = 100, **hparams):
        super().__init__(None, teachers, num_classes=num_classes, **hparams)
        # Kept in a dict so nn.Module does not register it (the members are frozen teachers).
        self._eval = {"ensemble": SoftmaxAverage(self.teachers)}

    def stages(self):
        return []

    def trainable_groups(self) -> dict[str, nn.Module]:
        return {}

    def forward_train(self, images: Tensor, targets: Tensor, ctx: StepContext):
        raise RuntimeError("the 'ensemble' method trains nothing; it is evaluated only")

    def eval_models(self) -> dict[str, nn.Module]:
        return dict(self._eval)
