"""FitNets: Hints for Thin Deep Nets (Romero, Ballas, Ebrahimi Kahou, Chassang, Gatta & Bengio, ICLR 2015).

A thin, deep student (the FitNet) is trained in two stages (Sec. 2.2-2.3, Algorithm 1):

1. Hint-based training. A *hint* layer h in the middle of the teacher guides a *guided* layer g in the
   middle of the student. A regressor r on top of the guided layer maps its output to the hint's shape,
   and the student's layers up to g (W_Guided) and the regressor (W_r) minimise Eq. 3 (the student's
   forward pass stops at g: the layers above it are not part of this stage):

       L_HT = 1/2 || u_h(x) - r(v_g(x)) ||^2

   The regressor is convolutional: a k1 x k2 convolution without padding with N_g,i - k_i + 1 = N_h,i,
   so an N_g1 x N_g2 guided map becomes the N_h1 x N_h2 hint map, with as many output channels as the
   hint. "u_h and r must be the same non-linearity" (Sec. 2.2): the regressor ends with the hint
   layer's non-linearity (see `regressor_act`).

2. Knowledge distillation of the whole student from the stage-1 weights, Eq. 2 with an annealed weight:

       L_KD = CE(y, P_s) + lambda * CE(P_t^T, P_s^T),   P^T = softmax(a / T)

   with lambda decaying linearly from 4 to 1 over the stage and T = 3 (Sec. 4.1). The regressor is not
   used any more (it is dropped; it stays in the checkpoint only so a stage-1 checkpoint resumes).

`kd_loss` is T^2 * KL(P_t^T || P_s^T). The paper's soft term has no T^2 factor, so the method divides
it out: `loss_kd` = lambda * KL(P_t^T || P_s^T), which differs from lambda * CE(P_t^T, P_s^T) only by
lambda times the teacher's entropy, a constant of the student: same gradients as Eq. 2.
"""
from __future__ import annotations

import re
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..functional import hint_loss, kd_loss
from ..models import FeatureTap, probe_input_size, stage_points
from ..models.features import canonical_point, resolve_module
from .base import METHODS, Distiller, Hyper, Stage, StepContext, as_constant

ACTIVATIONS = ("auto", "relu", "maxout", "none")


def resolve_point(model: nn.Module, point: str) -> str:
    """A `stage_points` name ("stage2"), "middle" (the middle stage) or a module path -> canonical path."""
    if point == "middle" or re.fullmatch(r"stem|stage\d+|final", point):
        points = stage_points(model)
        if point == "middle":
            stages = sorted((k for k in points if k.startswith("stage")), key=lambda k: int(k[5:]))
            return points[stages[(len(stages) - 1) // 2]]
        if point not in points:
            raise ConfigError(f"fitnets: {type(model).__name__} has no feature point '{point}'; "
                              f"valid: {', '.join(points)}")
        return points[point]
    return canonical_point(model, point)


def input_size(model: nn.Module, given: Sequence[int] | None) -> tuple[int, ...]:
    """`given`, else the network's own probe size (`probe_input_size`)."""
    return tuple(given) if given is not None else probe_input_size(model)


class _DryRun:
    """Eval mode, no gradients, random images; every module's train flag restored afterwards."""

    def __init__(self, model: nn.Module, input_size: Sequence[int]):
        self.model, self.input_size = model, tuple(input_size)

    def __call__(self, fn):
        param = next(self.model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        modes = {m: m.training for m in self.model.modules()}
        self.model.eval()
        try:
            with torch.no_grad():
                return fn(torch.randn(2, *self.input_size, generator=torch.Generator().manual_seed(0))
                          .to(device))
        finally:
            for m, mode in modes.items():
                m.training = mode


def probe_features(model: nn.Module, points: dict[str, str], input_size: Sequence[int]) -> dict[str, Tensor]:
    """The features at `points` for two random images (shapes and signs of the maps)."""
    def run(x):
        with FeatureTap(model, points) as tap:
            return tap(x)[1]
    return _DryRun(model, input_size)(run)


def modules_before(model: nn.Module, points: Sequence[str], input_size: Sequence[int]) -> list[nn.Module]:
    """Modules with parameters of their own that finish running before the last feature of `points`
    exists, in execution order (a dry run records the order). For an output point "path" the module
    at path and its children are included; for an input point "path:in" they are not."""
    pending = set(points)
    finished: list[nn.Module] = []
    handles = []

    def after(module, args, output):
        if pending:
            finished.append(module)

    def reached(point):
        def hook(module, *args):
            pending.discard(point)
        return hook

    for m in model.modules():
        handles.append(m.register_forward_hook(after))
    for p in points:
        path, _, where = p.partition(":")
        _, module = resolve_module(model, path)
        handles.append(module.register_forward_pre_hook(reached(p)) if where == "in"
                       else module.register_forward_hook(reached(p)))
    try:
        _DryRun(model, input_size)(model)
    finally:
        for h in handles:
            h.remove()
    owning = (m for m in finished if next(m.parameters(recurse=False), None) is not None)
    return list(dict.fromkeys(owning))


class Regressor(nn.Module):
    """FitNets' convolutional regressor: a k1 x k2 valid convolution (k_i = N_g,i - N_h,i + 1) to the
    hint's channels, then the hint layer's non-linearity (ReLU, maxout over `pieces` maps, or none)."""

    def __init__(self, guided: torch.Size, hint: torch.Size, activation: str = "none", pieces: int = 1):
        super().__init__()
        kernel = (guided[1] - hint[1] + 1, guided[2] - hint[2] + 1)
        if min(kernel) < 1:
            raise ConfigError(f"fitnets: the guided layer's map {tuple(guided[1:])} is smaller than the hint's "
                              f"{tuple(hint[1:])}; choose an earlier guided_point or a later hint_point")
        self.activation, self.pieces = activation, pieces if activation == "maxout" else 1
        self.conv = nn.Conv2d(guided[0], hint[0] * self.pieces, kernel)

    def extra_repr(self) -> str:
        return f"activation={self.activation!r}, pieces={self.pieces}"

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.activation == "relu":
            return F.relu(x)
        if self.activation == "maxout":
            return x.unflatten(1, (-1, self.pieces)).amax(2)
        return x


@METHODS.register("fitnets")
class FitNets(Distiller):
    """Stage "hint" (Eq. 3, trains the student up to the guided layer and the regressor), then stage
    "kd" (Eq. 2 with lambda annealed 4 -> 1, trains the whole student).

    `hint_point`/`guided_point` may also be equal-length lists (one regressor per pair, hint losses
    summed), e.g. the "3 loss FitNet" baseline of the FSP paper.
    """

    name = "fitnets"
    paper = "Romero et al., 'FitNets: Hints for Thin Deep Nets', ICLR 2015"
    equation = ("stage hint: Eq. 3, 1/2 ||u_h(x) - r(v_g(x))||^2; stage kd: Eq. 2, "
                "CE(y, P_s) + lambda CE(P_t^T, P_s^T), lambda 4 -> 1 linearly, T = 3")
    stage_names = ("hint", "kd")
    min_teachers = 1
    max_teachers = 1
    sized_by_images = True
    defaults = {
        "hint_point": Hyper("middle", "paper",
                            "the teacher's hint layer, 'in the middle' of the net (Sec. 2.2): 'middle' is the "
                            "middle stage of stage_points (stage2 of 3); a stage name or a module path also "
                            "works. FitNet 4's pair 11 <- 2 is stage2 <- stage2 of fitnet4/fitnets_maxout_teacher"),
        "guided_point": Hyper("middle", "paper", "the student's guided layer, also 'in the middle' of its net "
                                                 "(Sec. 2.2); same forms as hint_point"),
        "lambda_start": Hyper(4.0, "paper", "KD weight at the start of stage kd (Sec. 4.1)"),
        "lambda_end": Hyper(1.0, "paper", "KD weight at the end of stage kd, reached linearly (Sec. 4.1)"),
        "temperature": Hyper(3.0, "paper", "softmax temperature of the KD stage (Sec. 4.1)"),
        "regressor_act": Hyper("auto", "paper",
                               "'u_h and r must be the same non-linearity' (Sec. 2.2). auto: maxout with the hint "
                               "layer's pieces if it is a maxout layer, ReLU if the hint map is non-negative "
                               "(a rectified output), otherwise linear; or relu | maxout | none"),
        "input_size": Hyper(None, "assumed", "(C, H, W) of the images, which sizes the regressor; None: the "
                                             "student's timm pretrained_cfg input_size (3x32x32 for the CIFAR nets)"),
    }

    def __init__(self, student: nn.Module, teachers: Sequence[nn.Module] = (),
                 num_classes: int = 100, **hparams):
        super().__init__(student, teachers, num_classes=num_classes, **hparams)
        teacher = self.teachers[0]
        hint_pts, guided_pts = self._as_list("hint_point"), self._as_list("guided_point")
        if len(hint_pts) != len(guided_pts):
            raise ConfigError(f"fitnets: {len(hint_pts)} hint points but {len(guided_pts)} guided points; "
                              f"give one guided point per hint point")
        if self.hp["regressor_act"] not in ACTIVATIONS:
            raise ConfigError(f"fitnets: regressor_act must be one of {', '.join(ACTIVATIONS)}, "
                              f"got {self.hp['regressor_act']!r}")
        size = input_size(student, self.hp["input_size"])
        self.hint_points = {f"hint{i}": resolve_point(teacher, p) for i, p in enumerate(hint_pts)}
        self.guided_points = {f"hint{i}": resolve_point(student, p) for i, p in enumerate(guided_pts)}
        hints = probe_features(teacher, self.hint_points, size)
        guided = probe_features(student, self.guided_points, size)
        self.regressors = nn.ModuleDict({
            k: Regressor(guided[k].shape[1:], hints[k].shape[1:],
                         *self._activation(teacher, self.hint_points[k], hints[k]))
            for k in self.hint_points})
        self._to_guided = modules_before(student, list(self.guided_points.values()), size)
        # Plain attributes, not submodules: the taps hold the networks, which must not be registered twice.
        # Both stop at their last point: Eq. 3 involves W_Guided only, so the layers after the guided one
        # neither run nor move their batch-norm statistics in the hint stage (nor the teacher's tail runs).
        self.student_tap = FeatureTap(student, self.guided_points, stop=True)
        self.teacher_tap = FeatureTap(teacher, self.hint_points, stop=True)

    def _as_list(self, key: str) -> list[str]:
        value = self.hp[key]
        return [value] if isinstance(value, str) else list(value)

    def _activation(self, teacher: nn.Module, point: str, hint: Tensor) -> tuple[str, int]:
        act = self.hp["regressor_act"]
        _, module = resolve_module(teacher, point.partition(":")[0])
        pieces = int(getattr(module, "pieces", 1))
        if act == "maxout" and pieces < 2:
            raise ConfigError(f"fitnets: regressor_act 'maxout' needs a maxout hint layer; teacher layer "
                              f"'{point}' has no 'pieces'; use relu or none")
        if act != "auto":
            return act, pieces
        if pieces > 1:
            return "maxout", pieces
        return ("relu" if bool((hint >= 0).all()) else "none"), 1

    # -- stages -----------------------------------------------------------------------------------
    def stages(self) -> list[Stage]:
        return [Stage("hint", trains=("student_to_guided", "regressor"), losses=("loss_hint",)),
                Stage("kd", trains=("student",), losses=("loss_ce", "loss_kd"))]

    def trainable_groups(self) -> dict[str, nn.Module]:
        return {"student": self.student, "student_to_guided": nn.ModuleList(self._to_guided),
                "regressor": self.regressors}

    def kd_weight(self, progress: float) -> float:
        """lambda, linear from lambda_start (progress 0) to lambda_end (progress 1)."""
        start, end = self.hp["lambda_start"], self.hp["lambda_end"]
        return start + (end - start) * min(max(progress, 0.0), 1.0)

    def forward_train(self, images: Tensor, targets: Tensor, ctx: StepContext
                      ) -> tuple[Tensor | None, dict[str, Tensor]]:
        if ctx.stage.name == "hint":  # no logits: the student's forward stops at the guided layer
            _, guided = self.student_tap(images)
            _, hints = as_constant(self._teacher_forward(self.teacher_tap, images))
            loss = sum(hint_loss(self.regressors[k](guided[k]), hints[k]) for k in self.hint_points)
            return None, {"loss_hint": loss}
        logits = self.student(images)
        (teacher_logits,) = self.teacher_logits(images)
        t = float(self.hp["temperature"])
        soft = kd_loss(logits, teacher_logits, t) / (t * t)  # Eq. 2 has no T^2 factor
        return logits, {"loss_ce": F.cross_entropy(logits, targets),
                        "loss_kd": self.kd_weight(ctx.progress) * soft}
