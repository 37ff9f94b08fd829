"""A Gift from Knowledge Distillation: Fast Optimization, Network Minimization and Transfer Learning
(Yim, Joo, Bae & Kim, CVPR 2017).

What the teacher teaches is the *flow of solution procedure* (FSP) between two layers: the Gram
matrix of their feature maps (Eq. 1),

    G_ij(x) = sum_{h,w} F1_{h,w,i}(x) * F2_{h,w,j}(x) / (h * w),

taken between the first and the last feature map of each section of a residual network. With
`stage_points` these are the pairs (stem, stage1), (stage1, stage2), ..., (stage N-1, stage N); the
first map of a later section is the previous section's output, which is spatially larger and is
max-pooled to the section's size (`fsp_matrix`). Two stages (Sec. 3.3):

1. "fsp": the student minimises only the FSP loss (Eq. 2), equal weights lambda_i:
       L_FSP = 1/N sum_x sum_i lambda_i || G_i^T(x) - G_i^S(x) ||_2^2
2. "train": the student is trained on the labels (cross-entropy) starting from the stage-1 weights.

The FSP matrices of student and teacher must have the same size, so the two networks need equal
channel counts at every stage point (ResNet-26 -> ResNet-8, ResNet-32 -> ResNet-14, ResNet-32x4 ->
ResNet-32x4); the depth may differ.

Table 1's dagger rows train stage 1 "with a randomly shuffled FSP matrix" so that ensemble members are
less alike: with `shuffle`, each teacher FSP matrix G_i^T (C1 x C2) has its rows permuted by a fixed
random permutation P_i of 1..C1 and its columns by an independent fixed Q_i of 1..C2, drawn once from
`shuffle_seed`, so the student matches G_i^T[P_i][:, Q_i]. The permutations are independent per matrix,
so a map shared by two pairs (stage1 is the second map of pair 1 and the first of pair 2) is shuffled
differently in each. The student's matrices are not shuffled. Permuting the rows and columns of G is
done by permuting the channels of the teacher's two maps before `fsp_matrix`, which gives exactly
G[P][:, Q].
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..functional import fsp_loss
from ..models import FeatureTap, feature_shapes, stage_points
from .base import METHODS, Distiller, Hyper, Stage, StepContext, as_constant
from .fitnets import input_size


def section_points(model: nn.Module) -> dict[str, str]:
    """"stem", "stage1".."stageN" of `stage_points`, in order."""
    points = stage_points(model)
    stages = sorted((k for k in points if k.startswith("stage")), key=lambda k: int(k[5:]))
    if "stem" not in points or not stages:
        raise ConfigError(f"fsp: {type(model).__name__} has no 'stem' and 'stage1'.. feature points "
                          f"(it has {', '.join(points)}); FSP needs sectioned networks such as the CIFAR ResNets")
    return {k: points[k] for k in ["stem", *stages]}


@METHODS.register("fsp")
class FSP(Distiller):
    """Stage "fsp": `loss_fsp` only (Eq. 2); stage "train": `loss_ce` from the stage-1 weights."""

    name = "fsp"
    paper = "Yim, Joo, Bae & Kim, 'A Gift from Knowledge Distillation', CVPR 2017"
    equation = ("stage fsp: Eq. 2, 1/N sum_x sum_i lambda_i ||G_i^T - G_i^S||_2^2 with G of Eq. 1, lambda_i = 1; "
                "stage train: CE(y, P_s)")
    stage_names = ("fsp", "train")
    min_teachers = 1
    max_teachers = 1
    defaults = {
        "shuffle": Hyper(False, "paper", "Table 1 dagger: stage 1 against row/column-shuffled teacher FSP "
                                         "matrices, to make ensemble members less alike"),
        "shuffle_seed": Hyper(0, "assumed", "seed of the fixed permutations; give each ensemble member its own"),
        "input_size": Hyper(None, "assumed", "(C, H, W) of the dry run that checks channel counts; None: the "
                                             "student's timm pretrained_cfg input_size (3x32x32 for the CIFAR nets)"),
    }

    def __init__(self, student: nn.Module, teachers: Sequence[nn.Module] = (),
                 num_classes: int = 100, **hparams):
        super().__init__(student, teachers, num_classes=num_classes, **hparams)
        teacher = self.teachers[0]
        s_points, t_points = section_points(student), section_points(teacher)
        if list(s_points) != list(t_points):
            raise ConfigError(f"fsp: the student has {len(s_points) - 1} sections and the teacher "
                              f"{len(t_points) - 1}; FSP pairs sections one to one")
        size = input_size(student, self.hp["input_size"])
        s_shapes = feature_shapes(student, s_points, size)
        t_shapes = feature_shapes(teacher, t_points, size)
        for k in s_points:
            if s_shapes[k][0] != t_shapes[k][0]:
                raise ConfigError(f"fsp: the student's {k} has {s_shapes[k][0]} channels but the teacher's has "
                                  f"{t_shapes[k][0]}; FSP matrices need equal channel counts at every stage "
                                  f"point (e.g. cifar_resnet26 -> cifar_resnet8)")
        names = list(s_points)
        self.pairs = list(zip(names[:-1], names[1:]))
        # Stage 1 needs the section maps only: both forwards stop at the last one, so whatever follows it
        # (a pre-activation net's final batch norm, the classifier) neither runs nor moves its statistics.
        self.student_tap = FeatureTap(student, s_points, stop=True)
        self.teacher_tap = FeatureTap(teacher, t_points, stop=True)
        if self.hp["shuffle"]:
            g = torch.Generator().manual_seed(int(self.hp["shuffle_seed"]))
            for i, (a, b) in enumerate(self.pairs):
                self.register_buffer(f"rows{i}", torch.randperm(int(t_shapes[a][0]), generator=g), persistent=False)
                self.register_buffer(f"cols{i}", torch.randperm(int(t_shapes[b][0]), generator=g), persistent=False)

    def stages(self) -> list[Stage]:
        return [Stage("fsp", trains=("student",), losses=("loss_fsp",)),
                Stage("train", trains=("student",), losses=("loss_ce",))]

    def teacher_pairs(self, feats: dict[str, Tensor]) -> list[tuple[Tensor, Tensor]]:
        """The teacher's (first, last) map of each section; channel-permuted under `shuffle`."""
        pairs = [(feats[a], feats[b]) for a, b in self.pairs]
        if self.hp["shuffle"]:
            pairs = [(f1[:, getattr(self, f"rows{i}")], f2[:, getattr(self, f"cols{i}")])
                     for i, (f1, f2) in enumerate(pairs)]
        return pairs

    def forward_train(self, images: Tensor, targets: Tensor, ctx: StepContext
                      ) -> tuple[Tensor | None, dict[str, Tensor]]:
        if ctx.stage.name == "fsp":
            _, s_feats = self.student_tap(images)
            _, t_feats = as_constant(self._teacher_forward(self.teacher_tap, images))
            student_pairs = [(s_feats[a], s_feats[b]) for a, b in self.pairs]
            return None, {"loss_fsp": fsp_loss(student_pairs, self.teacher_pairs(t_feats))}
        logits = self.student(images)
        return logits, {"loss_ce": F.cross_entropy(logits, targets)}
