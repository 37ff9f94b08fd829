"""Shared plumbing of the feature-based methods (AT, L1, FT, FEED): hooks on student and teachers.

A `FeatureDistiller` names the points it reads by their `stage_points` names ("stage1", "final", ...).
It taps the student and every teacher once, at construction, and measures the tapped shapes with one
dry run (used to size adapters and to reject incompatible pairs early). Each training step runs every
teacher once, under `torch.inference_mode`, for its logits and its features together.
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from ..errors import ConfigError
from ..models import FeatureTap, feature_shapes, probe_input_size, stage_points
from .base import Distiller, as_constant

# Feature shapes come from a dry run at each network's `probe_input_size`. Only channel counts, and
# whether student and teacher maps have equal spatial sizes, are read from it; for nets of the same
# family neither depends on the input size. The losses check the real shapes again at every step.


def stage_groups(model: nn.Module) -> list[str]:
    """The names "stage1".."stageN" of a model's stage groups, in order."""
    names = [k for k in stage_points(model) if k.startswith("stage")]
    return sorted(names, key=lambda k: int(k[len("stage"):]))


class FeatureDistiller(Distiller):
    """A Distiller that reads named feature maps through forward hooks.

    Subclasses call `self.tap_features(points)` in `__init__` (after `super().__init__`), then use
    `self.student_forward(images)` and `self.teacher_forwards(images)`, and the measured shapes
    `self.student_shapes` / `self.teacher_shapes[n]` ({point: per-sample torch.Size (C, H, W)}).
    """

    def tap_features(self, points: Sequence[str]) -> None:
        self.points = tuple(points)
        s_points = self._resolve(self.student, "student")
        t_points = [self._resolve(t, f"teacher {i + 1}") for i, t in enumerate(self.teachers)]
        # FeatureTap is not an nn.Module, so the taps (which hold the networks) register nothing: the
        # teachers stay outside parameters() and state_dict(). Their hooks record only inside tap(x).
        self.student_tap = FeatureTap(self.student, s_points)
        self.teacher_taps = [FeatureTap(t, p) for t, p in zip(self.teachers, t_points)]
        self.student_shapes = feature_shapes(self.student, s_points, probe_input_size(self.student))
        self.teacher_shapes = [feature_shapes(t, p, probe_input_size(t)) for t, p in zip(self.teachers, t_points)]

    def _resolve(self, model: nn.Module, who: str) -> dict[str, str]:
        known = stage_points(model)
        missing = [p for p in self.points if p not in known]
        if missing:
            raise ConfigError(f"{self.name}: the {who} ({type(model).__name__}) has no feature point "
                              f"'{missing[0]}' (it has {', '.join(known)}); use a model with stage points")
        return {p: known[p] for p in self.points}

    def student_forward(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The student's logits and tapped features (with gradients)."""
        return self.student_tap(images)

    def teacher_forwards(self, images: Tensor) -> list[tuple[Tensor, dict[str, Tensor]]]:
        """Each teacher's (logits, features), run once under inference_mode, returned as constants."""
        return as_constant(self.run_teachers(self.teacher_taps, images))
