"""FEED: Feature-level Ensemble for Knowledge Distillation (Park & Kwak, arXiv 1909.10754, 2019).

Several frozen teachers, each with the student's architecture, pass their knowledge to the student at
the final feature map. Each teacher n has its own non-linear transformation layer NTL_n (three 3x3
convolutions on the student's final feature map), trained with the student and dropped at test time.
The loss is

    L = CE(y, softmax(s)) + beta * sum_n || x_n^T/||x_n^T||_2 - NTL_n(x^S)/||NTL_n(x^S)||_2 ||_1 ,

the normalised L1 of Factor Transfer, with the NTL in place of FT's translator and the teacher's raw
feature map in place of the paraphrased factor.

pFEED (parallel) is this method with N teachers trained from scratch (FEED Table 2: five). sFEED
(sequential) is the same method with one teacher per generation: the experiment layer chains the
generations, the student of generation m becoming the teacher of generation m+1 (Table 4, Stack-k).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..functional import feed_loss
from .base import METHODS, Hyper, Stage, StepContext
from .feature_distiller import FeatureDistiller


class NTL(nn.Sequential):
    """Non-linear transformation layer: conv3x3-BN-ReLU, conv3x3-BN-ReLU, conv3x3 (C_s -> C_t -> C_t -> C_t).

    The last convolution is left linear so the NTL output can take either sign before normalisation.
    """

    def __init__(self, in_channels: int, out_channels: int):
        c = out_channels
        super().__init__(
            nn.Conv2d(in_channels, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, padding=1),
        )


@METHODS.register("feed")
class FEED(FeatureDistiller):
    """One stage ("train") training `student` and `ntls`: `loss_ce` and `loss_feed` = beta * sum_n L_FEED_n.

    `eval_models()` is the student alone: the NTLs exist only for training.
    """

    name = "feed"
    paper = "Park & Kwak, 'FEED: Feature-level Ensemble for Knowledge Distillation', arXiv 1909.10754, 2019"
    equation = "L = CE + beta * sum_n || x_n^T/||x_n^T||_2 - NTL_n(x^S)/||NTL_n(x^S)||_2 ||_1 (final feature maps)"
    stage_names = ("train",)
    min_teachers = 1
    defaults = {
        "beta": Hyper(500.0, "assumed",
                      "FEED's beta was not available; 500 is Factor Transfer's released-code value for the "
                      "same mean-reduced normalised L1 form"),
    }
    deviations = (
        "NTL layout assumed: the paper gives three 3x3 convolutions; BatchNorm + ReLU after the first two "
        "and a linear last layer are our choice.",
        "The L1 of the normalised maps is averaged over elements (Factor Transfer's code), not summed.",
    )

    def __init__(self, student, teachers=(), num_classes: int = 100, **hparams):
        super().__init__(student, teachers, num_classes=num_classes, **hparams)
        self.tap_features(["final"])
        s = self.student_shapes["final"]
        ntls = []
        for i, shapes in enumerate(self.teacher_shapes):
            t = shapes["final"]
            if t[1:] != s[1:]:
                raise ConfigError(f"feed: the student's final feature map is {tuple(s[1:])} pixels but teacher "
                                  f"{i + 1}'s is {tuple(t[1:])}; the NTL keeps the spatial size, so use teachers "
                                  f"with the student's architecture")
            ntls.append(NTL(s[0], t[0]))
        self.ntls = nn.ModuleList(ntls)

    def stages(self) -> list[Stage]:
        return [Stage("train", trains=("student", "ntls"), losses=("loss_ce", "loss_feed"))]

    def trainable_groups(self) -> dict[str, nn.Module]:
        return {"student": self.student, "ntls": self.ntls}

    def forward_train(self, images: Tensor, targets: Tensor, ctx: StepContext
                      ) -> tuple[Tensor, dict[str, Tensor]]:
        teachers = self.teacher_forwards(images)
        logits, feats = self.student_forward(images)
        total = sum(feed_loss(ntl(feats["final"]), t_feats["final"])
                    for ntl, (_, t_feats) in zip(self.ntls, teachers))
        return logits, {"loss_ce": F.cross_entropy(logits, targets), "loss_feed": self.hp["beta"] * total}
