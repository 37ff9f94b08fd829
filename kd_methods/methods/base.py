"""The unit every method is written in: a `Distiller` with named losses and declared stages.

A method subclasses `Distiller`, registers itself in `METHODS`, and writes
`forward_train(images, targets, ctx) -> (logits, {"loss_name": scalar, ...})`. The engine sums the
returned losses, so a method never touches the optimiser (logits are None in a stage that computes none:
FitNets' hint stage stops the student at its guided layer). Multi-stage methods (FitNets hint training,
FSP stage 1, the FT paraphraser) declare their `stages()`: each stage names the parameter groups it
trains (keys of `trainable_groups()`), and the engine gives each stage its own optimiser and schedule.
A stage may also update its groups in turn within each step (`Stage.updates`, DML's Algorithm 1): the
engine then runs one forward, backward and optimiser step per update, in order, with only that update's
groups trainable, and tells `forward_train` which one it is (`ctx.update`).

Teachers are frozen: kept outside the module tree (so they are not in checkpoints, not in
`parameters()`, never switched to train mode), run under `torch.inference_mode`, and their outputs
are cloned back to normal tensors so they can enter a loss as constants.

Hyper-parameters carry provenance: every default is a `Hyper(value, source, note)` with source
"paper" (read in the paper), "assumed" (not stated or not available: our choice) or "code" (the
authors' released code). `provenance()` is the machine-readable record the reports print.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..registry import Registry

METHODS: Registry[type["Distiller"]] = Registry("method")


SOURCES = ("paper", "assumed", "code")


@dataclass(frozen=True)
class Hyper:
    """A method default and where it comes from; `options` gives other named values their own
    (source, note), so a config choosing one shows where that value comes from."""
    value: Any
    source: str = "paper"  # paper | assumed | code
    note: str = ""
    options: Mapping[Any, tuple[str, str]] = field(default_factory=dict)

    def __post_init__(self):
        for source in (self.source, *(s for s, _ in self.options.values())):
            if source not in SOURCES:
                raise ValueError(f"Hyper source must be paper|assumed|code, got {source!r}")


@dataclass(frozen=True)
class Stage:
    """One phase of a method's training.

    name:    the key the experiment spec uses to give this stage its own length and optimiser.
    trains:  names of `Distiller.trainable_groups()` entries that receive gradients and are optimised.
    losses:  names of the losses `forward_train` returns in this stage (over all its updates; checked by
             the tests).
    updates: groups updated one after another within each step, each from its own forward pass (so an
             update sees the weights the previous ones just changed); empty: all of `trains` at once.
    """
    name: str
    trains: tuple[str, ...] = ("student",)
    losses: tuple[str, ...] = ("loss_ce",)
    updates: tuple[tuple[str, ...], ...] = ()


@dataclass
class StepContext:
    """Where training is: lets a method anneal weights (FitNets' lambda) or switch behaviour by stage."""
    stage: Stage
    epoch: int = 0           # epoch within the stage, from 0
    step: int = 0            # optimiser step within the stage, from 0
    total_steps: int = 1     # optimiser steps in the stage
    update: tuple[str, ...] | None = None   # the groups this forward updates (one of `stage.updates`)

    @property
    def progress(self) -> float:
        """Fraction of the stage done, in [0, 1)."""
        return self.step / max(1, self.total_steps)


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode and no gradients: what a teacher is."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def as_constant(x):
    """Clone tensors made under inference_mode into normal tensors (no grad) usable in a loss."""
    if isinstance(x, Tensor):
        return x.clone()
    if isinstance(x, Mapping):
        return {k: as_constant(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(as_constant(v) for v in x)
    return x


class Distiller(nn.Module):
    """Base class of every method. Subclasses set the class attributes and `forward_train`.

    student:  the network being trained (None only for evaluation-only methods such as `ensemble`).
    teachers: frozen networks; may be empty.
    num_classes: size of the label space (methods that build peers or heads need it).
    hparams: overrides of `defaults`; an unknown key is an error.
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""          # citation of the method's paper
    equation: ClassVar[str] = ""       # which equation/section `forward_train` implements
    defaults: ClassVar[dict[str, Hyper]] = {}
    deviations: ClassVar[tuple[str, ...]] = ()   # where we knowingly differ from the paper, and why
    min_teachers: ClassVar[int] = 0
    max_teachers: ClassVar[int | None] = None
    # Sizes a module from the images' size (FitNets' regressor kernel), so its runs keep their data's size.
    sized_by_images: ClassVar[bool] = False

    def __init__(self, student: nn.Module | None, teachers: Sequence[nn.Module] = (),
                 num_classes: int = 100, **hparams):
        super().__init__()
        unknown = sorted(set(hparams) - set(self.defaults))
        if unknown:
            raise ValueError(f"method '{self.name}' has no hyper-parameter {unknown[0]!r}; "
                             f"valid: {', '.join(sorted(self.defaults)) or 'none'}")
        n = len(teachers)
        if n < self.min_teachers or (self.max_teachers is not None and n > self.max_teachers):
            most = "any number" if self.max_teachers is None else self.max_teachers
            raise ValueError(f"method '{self.name}' needs {self.min_teachers}..{most} teachers, got {n}")
        self.hp = {k: hparams.get(k, h.value) for k, h in self.defaults.items()}
        self._overridden = set(hparams)
        self.num_classes = num_classes
        self.student = student
        # A plain list, not a ModuleList: teachers stay out of parameters(), state_dict() and train().
        self.teachers: list[nn.Module] = [freeze(t) for t in teachers]

    @classmethod
    def built_networks(cls, hparams: Mapping[str, Any]) -> tuple[str, ...]:
        """Model names of the networks the method builds beside the student (DML's peers), so a spec
        can be judged by every network of its run before anything is built."""
        return ()

    # -- what the engine asks of a method -------------------------------------------------------
    def stages(self) -> list[Stage]:
        return [Stage("train", trains=("student",), losses=self.train_losses())]

    def train_losses(self) -> tuple[str, ...]:
        return ("loss_ce",)

    def trainable_groups(self) -> dict[str, nn.Module]:
        """Named modules that stages may train. Adapters (regressors, NTLs, ...) add themselves here."""
        return {"student": self.student} if self.student is not None else {}

    def parameters_for(self, stage: Stage) -> list[nn.Parameter]:
        groups = self.trainable_groups()
        missing = [g for g in stage.trains if g not in groups]
        if missing:
            raise KeyError(f"stage '{stage.name}' trains unknown group {missing[0]!r}")
        seen, params = set(), []
        for g in stage.trains:
            for p in groups[g].parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
        return params

    def set_trainable(self, stage: Stage, update: Sequence[str] | None = None) -> None:
        """requires_grad only on what this stage trains (or, within it, one of its `updates`), so nothing
        else receives a gradient."""
        params = self.parameters_for(stage)
        if update is not None:
            within = {id(p) for p in params}
            params = self.parameters_for(Stage(stage.name, tuple(update)))
            if any(id(p) not in within for p in params):
                raise KeyError(f"stage '{stage.name}' updates {tuple(update)!r}, which it does not train")
        for module in self.trainable_groups().values():
            module.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)

    def forward_train(self, images: Tensor, targets: Tensor, ctx: StepContext
                      ) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def eval_models(self) -> dict[str, nn.Module]:
        """The networks evaluated each epoch, first one is the run's headline model."""
        return {"student": self.student}

    def forward(self, images: Tensor, targets: Tensor | None = None, ctx: StepContext | None = None):
        """With targets: a training step's (logits, losses), so DDP can wrap the whole distiller.
        Without: inference with the headline model."""
        if targets is None:
            return next(iter(self.eval_models().values()))(images)
        return self.forward_train(images, targets, ctx)

    # -- helpers for subclasses -------------------------------------------------------------------
    @torch.inference_mode()
    def _teacher_forward(self, teacher: nn.Module, images: Tensor):
        return teacher(images)

    def teacher_logits(self, images: Tensor) -> list[Tensor]:
        """Every teacher's logits as constants (computed under inference_mode)."""
        return as_constant(self.run_teachers(self.teachers, images))

    def run_teachers(self, runners: Sequence, images: Tensor) -> list:
        """`[r(images) for r in runners]` under inference_mode, for teachers or FeatureTaps on them.
        Several go through `engine.multi.ParallelForward`, which runs them as a loop, one torch.func vmap
        over stacked weights, or on CUDA streams, whichever it measured fastest (a loop when
        deterministic algorithms are requested)."""
        if len(runners) < 2:
            return [self._teacher_forward(r, images) for r in runners]
        from ..engine.multi import ParallelForward
        key = tuple(map(id, runners))
        cache = self.__dict__.setdefault("_parallel", {})
        if key not in cache:
            deterministic = torch.are_deterministic_algorithms_enabled()
            cache[key] = ParallelForward(runners, "loop" if deterministic else "auto")
        return cache[key](images)

    def train(self, mode: bool = True):
        super().train(mode)
        for t in self.teachers:
            t.eval()  # teachers never leave eval mode
        return self

    def _apply(self, fn, *args, **kwargs):
        # .to()/.cuda()/.half() must move the unregistered teachers as well.
        super()._apply(fn, *args, **kwargs)
        for t in self.teachers:
            t._apply(fn, *args, **kwargs)
        return self

    @classmethod
    def provenance(cls, overrides: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Rows: method, name, value, source (paper|assumed|code|config), note."""
        overrides = dict(overrides or {})
        rows = []
        for k, h in sorted(cls.defaults.items()):
            chosen = overrides.get(k, h.value)
            if chosen != h.value and isinstance(chosen, str) and chosen in h.options:
                source, note = h.options[chosen]
                rows.append(dict(method=cls.name, name=k, value=chosen, source=source, note=note))
            elif chosen != h.value:
                rows.append(dict(method=cls.name, name=k, value=chosen, source="config",
                                 note=f"default {h.value!r} ({h.source}) overridden by the experiment"))
            else:
                rows.append(dict(method=cls.name, name=k, value=h.value, source=h.source, note=h.note))
        for d in cls.deviations:
            rows.append(dict(method=cls.name, name="deviation", value="", source="assumed", note=d))
        return rows


def build_method(name: str, student: nn.Module | None, teachers: Iterable[nn.Module] = (),
                 num_classes: int = 100, **hparams) -> Distiller:
    return METHODS.get(name)(student, list(teachers), num_classes=num_classes, **hparams)
