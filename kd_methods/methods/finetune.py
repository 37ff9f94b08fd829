"""Fine-tuning: training that starts from a trained network's weights instead of a fresh initialisation.

The one teacher is only the source of the initial weights; the loss is plain cross-entropy. Two uses:
FSP Table 1's Teacher-double-dagger row ("21k more iterations starting from the 64k-iteration teacher")
and FSP Table 5's teacher, ImageNet-pretrained ResNet-34 fine-tuned on CUB-200.

Every tensor of the source's state dict is copied into the student (same architecture). The classifier
is copied too when its shape fits; when the label set differs (1000 ImageNet classes -> 200 birds) the
student keeps its freshly initialised classifier. Any other mismatch is an error.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import METHODS, Distiller, StepContext


def classifier_prefix(model: nn.Module) -> str:
    """The classifier's module path: timm's pretrained_cfg["classifier"], else "fc"."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return cfg.get("classifier", "fc")


@torch.no_grad()
def copy_weights(source: nn.Module, target: nn.Module) -> list[str]:
    """Copy `source`'s state into `target`; returns the keys left as they were (a resized classifier).

    Raises ValueError when the networks differ anywhere but in the classifier's shape.
    """
    src, dst = source.state_dict(), target.state_dict()
    head = classifier_prefix(target) + "."
    missing, unexpected = sorted(set(dst) - set(src)), sorted(set(src) - set(dst))
    resized = sorted(k for k in set(src) & set(dst) if src[k].shape != dst[k].shape)
    body_mismatch = [k for k in resized if not k.startswith(head)]
    if missing or unexpected or body_mismatch:
        what = (missing and f"missing {missing[0]}") or (unexpected and f"unexpected {unexpected[0]}") \
            or f"{body_mismatch[0]} has shape {tuple(src[body_mismatch[0]].shape)} in the source"
        raise ValueError(f"finetune: the source network does not fit the student ({what}); "
                         f"use the same architecture for both")
    for k, v in src.items():
        if k not in resized:
            dst[k].copy_(v)
    return resized


@METHODS.register("finetune")
class FineTune(Distiller):
    """One stage ("train"): `loss_ce`, starting from the teacher's weights (classifier re-initialised when
    the number of classes differs)."""

    name = "finetune"
    paper = "fine-tuning a trained network (FSP Table 1 Teacher-double-dagger, FSP Table 5 teacher)"
    equation = "theta_0 = theta_teacher; L = CE(y, softmax(s))"
    stage_names = ("train",)
    min_teachers = 1
    max_teachers = 1

    def __init__(self, student: nn.Module, teachers: Sequence[nn.Module] = (), num_classes: int = 100,
                 **hparams):
        super().__init__(student, teachers, num_classes=num_classes, **hparams)
        self.reinitialised = copy_weights(self.teachers[0], student)
        self.teachers = []  # only the weights were needed: free the source's memory

    def forward_train(self, images: Tensor, targets: Tensor, ctx: StepContext
                      ) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.student(images)
        return logits, {"loss_ce": F.cross_entropy(logits, targets)}
