"""Experiments as data: a spec says what to train; a budget says how long; together they resolve to a run.

An `ExperimentSpec` is the paper's protocol for one trained network (model, method, teachers, dataset,
optimiser, stage lengths, seed). Teachers are specs too (or pretrained files), and so may be the
student's starting point (`init`: another run's trained student, or a weights file), so a table is a
graph of runs and a teacher shared by several tables is trained once. A stage given length 0 is skipped
(`SKIPPED`): with `init`, several runs can branch from one run's first stage (FSP's Table 1). `resolve(spec, budget)` applies the budget
and returns a plain, JSON-able config; the run id is a hash of that config's identity (labels such as the
paper's table name do not enter it, so identical trainings are shared between tables and papers).

Specs load from YAML/dicts with strict validation: unknown keys, wrong types and impossible values raise
`ConfigError` with one line naming the fix.
"""
from __future__ import annotations

import codecs
import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from ..errors import ConfigError
from ..registry import closest


@dataclass
class Optim:
    """Optimiser and learning-rate schedule of one phase. Milestones are in the phase's unit."""
    name: str = "sgd"                 # sgd | rmsprop | adam
    lr: float = 0.1
    momentum: float = 0.9             # adam: beta1 (the first-moment decay)
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "multistep"       # constant | step | multistep | cosine
    milestones: list[float] = field(default_factory=list)   # multistep: lr *= gamma at each
    step_size: float = 0.0            # step: lr *= gamma every step_size units
    gamma: float = 0.1
    alpha: float = 0.99               # rmsprop smoothing; adam: beta2 (the second-moment decay)
    eps: float = 1e-8                 # rmsprop / adam epsilon


@dataclass
class Phase:
    """How long a stage trains (epochs or optimiser iterations) and with what optimiser."""
    length: float = 200
    unit: str = "epoch"               # epoch | iter
    optim: Optim = field(default_factory=Optim)


@dataclass
class Pretrained:
    """A weights file, verified against its sha256 before use: a teacher, or a student's `init`."""
    model: str
    path: str
    sha256: str
    num_classes: int = 1000
    source: str = ""
    ignore: list[str] = field(default_factory=list)   # key prefixes the model lacks (an auxiliary head)


@dataclass
class ExperimentSpec:
    model: str
    method: str = "scratch"
    method_args: dict[str, Any] = field(default_factory=dict)
    teachers: list[Union["ExperimentSpec", Pretrained]] = field(default_factory=list)
    dataset: str = "cifar100"
    augment: Union[str, None] = None  # None: the dataset's default
    preprocess: str = "standard"      # standard | zca
    batch_size: int = 128
    train: Phase = field(default_factory=Phase)
    stages: dict[str, Phase] = field(default_factory=dict)   # per-stage overrides of `train`
    seed: int = 0
    train_subset: Union[int, None] = None   # first-N images (tiny runs); the smoke budget caps it further
    test_subset: Union[int, None] = None
    lr_scaling: str = "none"          # none: batch_size is global | linear: per rank, lr *= world_size (DDP)
    # Start the student from this weights file or from the student of this (finished) run; else a fresh init.
    init: Union[Pretrained, "ExperimentSpec", None] = None
    # The student's fresh init: None, the model's own (Kaiming); a number a, every weight from U(-a, a).
    uniform_init: Union[float, None] = None
    # Labels: where the run appears. Not part of the run's identity.
    paper: str = ""
    table: str = ""
    label: str = ""

    def phase(self, stage_name: str) -> Phase:
        return self.stages.get(stage_name, self.train)


SKIPPED = Phase(0, "iter")  # a stage override of length 0: the stage does not run

LABEL_FIELDS = ("paper", "table", "label")
UNITS = ("epoch", "iter")
SCHEDULES = ("constant", "step", "multistep", "cosine")
OPTIMISERS = ("sgd", "rmsprop", "adam")


# -- budgets -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Budget:
    """How much of the paper's protocol to run. `paper` is the protocol itself."""
    name: str
    length_scale: float = 1.0          # every phase length and milestone is scaled by this
    smoke: bool = False                # a few steps on synthetic data, tiny subsets
    max_seeds: Union[int, None] = None
    train_subset: Union[int, None] = None
    test_subset: Union[int, None] = None
    batch_size: Union[int, None] = None
    small_images: bool = False         # 32x32 synthetic stand-ins at 16x16 where the run allows (SMALL_STANDIN)
    description: str = ""


BUDGETS = {
    "paper": Budget("paper", description="the paper's protocol: epochs/iterations, batch size, schedule, seeds"),
    "short": Budget("short", length_scale=0.1, max_seeds=2,
                    description="every row, schedules at 1/10 of the paper's length (milestones scaled), at most 2 seeds"),
    # Batches of 4: a ResNeXt-29 16x64d training step costs ~30 GFLOP per image, and FEED alone trains
    # 14 of them, some beside five ResNeXt teachers (its smoke took 9.2 min on 2 cores at batch 8).
    # 16x16 stand-ins for 32x32 sets: a quarter of every network's arithmetic (the FEED smoke in fp32 on
    # 2 cores: its WRN-28-10 and ResNeXt-29 runs were most of 13 minutes). Not 8x8: there the FSP smoke
    # diverges (its student's batch-norm variance turns inf after the FSP stage, in fp32 and bf16).
    "smoke": Budget("smoke", smoke=True, max_seeds=1, train_subset=8, test_subset=16, batch_size=4,
                    small_images=True,
                    description="every row and model, 1 epoch of 2 steps of 4 synthetic images (16 test "
                                "images; 16x16 in place of 32x32 where every network of the run takes any "
                                "size), 1 seed: checks the pipeline, says nothing about accuracy"),
}

# The synthetic stand-in for each real dataset (same class count and image shape) in smoke runs.
SYNTHETIC_FOR = {"cifar100": "synthetic100", "cifar10": "synthetic10", "svhn": "synthetic10",
                 "mnist": "synthetic_mnist", "fashion_mnist": "synthetic_mnist", "synthetic100": "synthetic100", "synthetic10": "synthetic10",
                 "synthetic_mnist": "synthetic_mnist"}
# The smoke budget's smaller stand-ins (`Budget.small_images`), used when every network of a run and of
# the runs it learns from takes any image size and no method sizes a module from it (FitNets' regressor).
SMALL_STANDIN = {"synthetic10": "synthetic10_16px", "synthetic100": "synthetic100_16px"}
NEEDS_REAL_DATA = ("imagenet", "cub200", "market1501")
DATA_SOURCES = ("auto", "synthetic", "real")
MAX_GENERATED = 1_000_000  # images of a synthetic split (3 GB as CIFAR-shaped uint8)
SEED_RANGE = 2 ** 32  # seeds are 0 .. 2**32 - 1 (NumPy's range; torch takes them all)
LABEL = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # a paper label names a results/ folder


def get_budget(name: str) -> Budget:
    if name not in BUDGETS:
        raise ConfigError(f"unknown budget '{name}'{closest(name, BUDGETS)}; use one of {', '.join(BUDGETS)}")
    return BUDGETS[name]


def _scaled_phase(phase: Phase, budget: Budget) -> dict:
    d = dataclasses.asdict(phase)
    if not phase.length:  # a skipped stage stays skipped
        return d
    if budget.smoke:
        # One short epoch (or two iterations); milestones keep their relative place in the schedule.
        new_len = 1 if phase.unit == "epoch" else 2
    elif budget.length_scale != 1.0:
        new_len = max(1, math.ceil(phase.length * budget.length_scale))
    else:
        return d
    ratio = new_len / phase.length if phase.length else 1.0
    d["length"] = new_len
    d["optim"]["milestones"] = [round(m * ratio, 6) for m in phase.optim.milestones]
    d["optim"]["step_size"] = round(phase.optim.step_size * ratio, 6)
    return d


def _cap(value, limit):
    return limit if value is None else value if limit is None else min(value, limit)


def resolve(spec: ExperimentSpec, budget: Union[Budget, str] = "paper", data: str = "auto",
            data_root: str = "data") -> dict:
    """The config a run trains with: spec + budget + data source. Teachers are resolved recursively.

    data: "auto" (real data, synthetic under the smoke budget), "synthetic" or "real".
    """
    budget = get_budget(budget) if isinstance(budget, str) else budget
    if data not in DATA_SOURCES:
        raise ConfigError(f"unknown data source {_show(data)}; use one of {', '.join(DATA_SOURCES)}")
    validate(spec)
    use_synthetic = data == "synthetic" or (data == "auto" and budget.smoke)
    dataset = spec.dataset
    if use_synthetic and dataset in SYNTHETIC_FOR:
        dataset = SYNTHETIC_FOR[dataset]
        if budget.small_images and dataset in SMALL_STANDIN and takes_any_image_size(spec):
            dataset = SMALL_STANDIN[dataset]
    from ..data import get_spec
    if get_spec(dataset).generated:
        for key in ("train_subset", "test_subset"):
            if (getattr(spec, key) or 0) > MAX_GENERATED:
                raise ConfigError(f"{key}={getattr(spec, key)} on {dataset}, a set generated in memory: at most "
                                  f"{MAX_GENERATED:,} images; lower it")
    if data == "real":
        if get_spec(dataset).generated:
            real = [k for k, v in SYNTHETIC_FOR.items() if v == dataset and k != dataset]
            raise ConfigError(f"dataset {dataset} is synthetic, but --data real insists on real data; pass "
                              f"--data auto or synthetic, or use a real dataset"
                              f"{' (' + ', '.join(real) + ')' if real else ''}")
    cfg = {
        "model": spec.model, "method": spec.method, "method_args": dict(spec.method_args),
        "dataset": dataset, "augment": spec.augment, "preprocess": spec.preprocess,
        "batch_size": min(budget.batch_size, spec.batch_size) if budget.batch_size else spec.batch_size,
        "train": _scaled_phase(spec.train, budget),
        "stages": {k: _scaled_phase(v, budget) for k, v in sorted(spec.stages.items())},
        "seed": spec.seed, "lr_scaling": spec.lr_scaling,
        "train_subset": _cap(spec.train_subset, budget.train_subset),
        "test_subset": _cap(spec.test_subset, budget.test_subset),
        "data_root": data_root,
        "budget": budget.name,
        "teachers": [],
    }
    if budget.smoke:
        # Two steps leave BatchNorm's running statistics 81% at their (0, 1) start, so an eval-mode
        # network (a teacher, a probed model) mis-scales every layer and deep ones blow up; averaging
        # the batches seen instead gives them the statistics of what they trained on.
        cfg["bn_stats"] = "cumulative"
    if spec.uniform_init is not None:  # only when set, so the ids of runs without one do not change
        cfg["uniform_init"] = spec.uniform_init
    if isinstance(spec.init, Pretrained):  # only when set, so the ids of runs without one do not change
        cfg["init"] = dataclasses.asdict(spec.init)
    elif spec.init is not None:  # another run: a dependency of this one, like a teacher
        cfg["init"] = resolve(spec.init, budget, data, data_root)
    if spec.lr_scaling == "linear":  # the global batch, hence the run, depends on the number of processes
        from ..engine.distributed import world_size
        cfg["world_size"] = world_size()
    for t in spec.teachers:
        if isinstance(t, Pretrained):
            cfg["teachers"].append({"pretrained": dataclasses.asdict(t)})
        else:
            cfg["teachers"].append(resolve(t, budget, data, data_root))
    cfg["labels"] = {k: getattr(spec, k) for k in LABEL_FIELDS}
    cfg["run_id"] = run_id(cfg)
    return cfg


IDENTITY_EXCLUDES = ("labels", "run_id", "data_root")


def identity(cfg: dict) -> dict:
    """The fields that decide what is trained; teachers and an init run enter through their own ids,
    weights files (pretrained teachers, the student's init) through their checksums."""
    ident = {k: v for k, v in cfg.items() if k not in IDENTITY_EXCLUDES and k != "teachers"}
    ident["teachers"] = [t.get("run_id") or {"pretrained": t["pretrained"]["sha256"]} for t in cfg["teachers"]]
    if cfg.get("init"):
        ident["init"] = cfg["init"].get("run_id") or {"pretrained": cfg["init"]["sha256"]}
    return ident


def takes_any_image_size(spec: Union[ExperimentSpec, Pretrained]) -> bool:
    """Whether every network of the run and of the runs it learns from (teachers, init) works at any image
    size: none has a timm `fixed_input_size`, and no method sizes a module from the images
    (`Distiller.sized_by_images`)."""
    import timm

    from ..methods import METHODS
    if isinstance(spec, Pretrained):
        names, upstream_specs = [spec.model], []
    else:
        method = METHODS.get(spec.method)
        if method.sized_by_images:
            return False
        names = [spec.model, *method.built_networks(spec.method_args)]
        upstream_specs = [*spec.teachers, *([spec.init] if spec.init is not None else [])]
    fixed = any(getattr(timm.models.get_pretrained_cfg(n), "fixed_input_size", False) for n in names)
    return not fixed and all(takes_any_image_size(u) for u in upstream_specs)


def upstream(cfg: dict) -> list[dict]:
    """The runs `cfg` needs finished before it trains: its teachers' runs and the run its student starts
    from (pretrained files are not runs)."""
    init = cfg.get("init")
    return [t for t in cfg["teachers"] if "run_id" in t] + ([init] if init and "run_id" in init else [])


def walk(cfgs) -> typing.Iterator[dict]:
    """Every config of a run graph, each run's upstream runs after it (a run shared by several appears
    once per path)."""
    for cfg in cfgs:
        yield cfg
        yield from walk(upstream(cfg))


def run_id(cfg: dict) -> str:
    blob = json.dumps(identity(cfg), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# -- loading and validation ------------------------------------------------------------------------
def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _show(value, limit: int = 60) -> str:
    """A value for an error message: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _convert(value, tp, where: str):
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[-1] if errors else f"{where}: bad value {_show(value)}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {_show(value)}")
        (item,) = typing.get_args(tp)
        return [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {_show(value)}")
        _, vt = typing.get_args(tp)
        return {str(k): _convert(v, vt, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return from_dict(tp, value, where)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {_show(value)}")
        try:
            number = float(value)
        except OverflowError:  # an integer beyond any float
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(f"{where}: expected a finite number, got {_show(value)}")
        return number
    if tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"{where}: expected an integer, got {_show(value)}")
        return int(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {_show(value)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {_show(value)}")
        return value
    raise ConfigError(f"{where}: unsupported type {_type_name(tp)}")


def from_dict(cls, data, where: str = "config"):
    """Build dataclass `cls` from a mapping, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"{where}: unknown key {_show(key)}{closest(str(key), names)}")
        tp = hints[key]
        if key == "teachers":
            if not isinstance(value, (list, tuple, type(None))):
                raise ConfigError(f"{where}.teachers: expected a list of teacher specs, got "
                                  f"{type(value).__name__} {_show(value)}")
            value = [_teacher(v, f"{where}.teachers[{i}]") for i, v in enumerate(value or [])]
            kwargs[key] = value
            continue
        if key == "init" and value is not None:  # a weights file (it has a path) or another run's spec
            kwargs[key] = _teacher(value, f"{where}.init")
            continue
        kwargs[key] = _convert(value, tp, f"{where}.{key}")
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where}: missing required key '{missing[0]}'")
    return cls(**kwargs)


def _teacher(value, where: str):
    if isinstance(value, (ExperimentSpec, Pretrained)):
        return value
    if isinstance(value, dict) and "path" in value:
        return from_dict(Pretrained, value, where)
    return from_dict(ExperimentSpec, value, where)


def validate(spec: ExperimentSpec, where: str = "config") -> None:
    """Impossible values and unknown names, checked before any work is done."""
    import timm

    from ..methods import METHODS
    from .. import models  # noqa: F401  (registers the CIFAR models in timm)

    if not timm.is_model(spec.model):
        raise ConfigError(f"{where}.model: unknown model '{spec.model}'{closest(spec.model, timm.list_models())}")
    if spec.method not in METHODS:
        raise ConfigError(f"{where}.method: unknown method '{spec.method}'{closest(spec.method, METHODS)}")
    if spec.uniform_init is not None and not 0 < spec.uniform_init < 1:
        raise ConfigError(f"{where}.uniform_init is the bound a of U(-a, a), in (0, 1); got {spec.uniform_init!r} "
                          f"(omit it for the model's own initialisation)")
    for key in ("train_subset", "test_subset"):
        if getattr(spec, key) is not None and getattr(spec, key) < 1:
            raise ConfigError(f"{where}.{key} must be >= 1 (or omitted), got {getattr(spec, key)}")
    from ..data import get_spec
    from ..data.folder import FOLDER_AUGMENTS
    from ..data.tensor_loader import TENSOR_AUGMENTS
    data = get_spec(spec.dataset)  # unknown dataset: ConfigError with the closest name
    augments = list(TENSOR_AUGMENTS if data.kind == "tensor" else FOLDER_AUGMENTS)
    if spec.augment is not None and spec.augment not in augments:
        raise ConfigError(f"{where}.augment: '{spec.augment}' does not apply to {spec.dataset}"
                          f"{closest(spec.augment, augments)}; use one of {', '.join(augments)}")
    if spec.batch_size < 1:
        raise ConfigError(f"{where}.batch_size must be >= 1, got {spec.batch_size}")
    if not 0 <= spec.seed < SEED_RANGE:
        raise ConfigError(f"{where}.seed must be in 0..{SEED_RANGE - 1}, got {spec.seed}")
    if spec.paper and not LABEL.fullmatch(spec.paper):
        raise ConfigError(f"{where}.paper names the results folder results/<paper>/: letters, digits, '_', "
                          f"'-' and '.', got {_show(spec.paper)}")
    if spec.lr_scaling not in ("none", "linear"):
        raise ConfigError(f"{where}.lr_scaling must be none or linear, got '{spec.lr_scaling}'")
    if spec.init is not None:
        if isinstance(spec.init, Pretrained):
            _validate_pretrained(spec.init, f"{where}.init")
        else:
            validate(spec.init, f"{where}.init")
        if spec.init.model != spec.model:
            raise ConfigError(f"{where}.init.model is '{spec.init.model}' but the student is '{spec.model}'; "
                              f"init weights must be the student's architecture")
    if spec.preprocess not in ("standard", "zca"):
        raise ConfigError(f"{where}.preprocess must be standard or zca, got '{spec.preprocess}'")
    if spec.preprocess == "zca" and data.kind != "tensor":
        raise ConfigError(f"{where}.preprocess: zca applies to CIFAR-shaped datasets, not {spec.dataset}")
    _validate_phase(spec.train, f"{where}.train")
    for k, phase in spec.stages.items():  # a stage override may skip its stage (length 0)
        _validate_phase(phase, f"{where}.stages.{k}", skippable=True)
    method = METHODS.get(spec.method)
    unknown = sorted(set(spec.method_args) - set(method.defaults))
    if unknown:
        raise ConfigError(f"{where}.method_args: method '{spec.method}' has no hyper-parameter "
                          f"'{unknown[0]}'{closest(unknown[0], method.defaults)}")
    for name, value in spec.method_args.items():
        _check_hyper(value, method.defaults[name].value, f"{where}.method_args.{name}")
    temp = spec.method_args.get("temperature")
    if temp is not None and temp <= 0:
        raise ConfigError(f"{where}.method_args.temperature must be > 0, got {temp!r}")
    n = len(spec.teachers)
    if n < method.min_teachers or (method.max_teachers is not None and n > method.max_teachers):
        most = "any number of" if method.max_teachers is None else f"at most {method.max_teachers}"
        raise ConfigError(f"{where}.teachers: method '{spec.method}' needs at least {method.min_teachers} and "
                          f"{most} teachers, got {n}")
    stage_names = {s for s in getattr(method, "stage_names", ())}
    if stage_names:
        extra = sorted(set(spec.stages) - stage_names)
        if extra:
            raise ConfigError(f"{where}.stages: method '{spec.method}' has no stage "
                              f"'{extra[0]}'{closest(extra[0], stage_names)}")
    for i, t in enumerate(spec.teachers):
        if isinstance(t, ExperimentSpec):
            validate(t, f"{where}.teachers[{i}]")
        else:
            _validate_pretrained(t, f"{where}.teachers[{i}]")


def _check_hyper(value, default, where: str) -> None:
    """A method_args value has its default's kind: a finite number for a number, true/false for a flag,
    a name or a list of names for a name, a list of names for a tuple of names, a mapping of numbers for a
    mapping of numbers;
    a default of None (inferred, e.g. an input size) takes None or a list of positive integers."""
    if isinstance(default, bool):
        _convert(value, bool, where)
    elif isinstance(default, int):
        _convert(value, int, where)
    elif isinstance(default, float):
        _convert(value, float, where)
    elif isinstance(default, str):  # a name, or several (FitNets' hint points for FSP's stages)
        _convert(value, Union[str, list[str]], where)
    elif isinstance(default, (tuple, list)):
        _convert(value, list[type(default[0]) if default else Any], where)
    elif isinstance(default, dict):  # its entries' kind is that of its numbers; a default's own value
        kinds = [d for d in default.values() if not isinstance(d, str)] or list(default.values())  # ('auto') too
        for k, v in _convert(value, dict[str, Any], where).items():
            if v != default.get(k):
                _check_hyper(v, kinds[0] if kinds else v, f"{where}.{k}")
    elif default is None and value is not None:
        if not (isinstance(value, (list, tuple)) and value
                and all(isinstance(v, int) and not isinstance(v, bool) and 0 < v < 2 ** 16 for v in value)):
            raise ConfigError(f"{where}: expected a list of positive integers (or leave it out), got {_show(value)}")


def _validate_pretrained(p: Pretrained, where: str) -> None:
    if not re.fullmatch(r"[0-9a-fA-F]{8,64}", p.sha256):
        raise ConfigError(f"{where}.sha256 must be the file's sha256 in hex (all 64 digits, or at least the "
                          f"first 8), got {p.sha256!r}")
    if p.num_classes < 1:
        raise ConfigError(f"{where}.num_classes must be >= 1, got {p.num_classes}")


def _validate_phase(phase: Phase, where: str, skippable: bool = False) -> None:
    if skippable and phase.length == 0:
        return
    if not phase.length > 0:
        zero = "; 0 skips a stage, under stages only" if not skippable else ", or 0 to skip the stage"
        raise ConfigError(f"{where}.length must be > 0, got {phase.length}{zero}")
    if phase.unit not in UNITS:
        raise ConfigError(f"{where}.unit must be epoch or iter, got '{phase.unit}'")
    o = phase.optim
    if o.name not in OPTIMISERS:
        raise ConfigError(f"{where}.optim.name: unknown optimiser '{o.name}'{closest(o.name, OPTIMISERS)}")
    if o.schedule not in SCHEDULES:
        raise ConfigError(f"{where}.optim.schedule: unknown schedule '{o.schedule}'{closest(o.schedule, SCHEDULES)}")
    if not o.lr > 0:
        raise ConfigError(f"{where}.optim.lr must be > 0, got {o.lr}")
    if o.weight_decay < 0 or o.momentum < 0:
        raise ConfigError(f"{where}.optim: weight_decay and momentum must be >= 0")
    if not o.gamma > 0:
        raise ConfigError(f"{where}.optim.gamma must be > 0 (the factor applied to the lr), got {o.gamma}")
    if o.schedule == "step" and not o.step_size > 0:
        raise ConfigError(f"{where}.optim.step_size must be > 0 for the step schedule")
    if sorted(o.milestones) != list(o.milestones):
        raise ConfigError(f"{where}.optim.milestones must be increasing, got {o.milestones}")


# YAML 1.1 (PyYAML) reads 1e-3 and 1.0e30 as strings; YAML 1.2 and every reader of a config mean numbers.
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


def _yaml_loader():
    import yaml

    class SpecLoader(yaml.SafeLoader):
        """SafeLoader (plain data only) that also reads exponent floats without a dot or sign."""

    SpecLoader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789."))
    return SpecLoader


BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def _config_text(path: Path, raw: bytes) -> str:
    """The file as text: UTF-8, or UTF-8/16/32 with a byte-order mark (what Windows editors write)."""
    encoding = next((enc for bom, enc in BOMS if raw.startswith(bom)), "utf-8")
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        hint = ", UTF-16 without its byte-order mark?" if b"\0" in raw[:80] else ""
        raise ConfigError(f"{path}: not {encoding.upper().replace('-SIG', '')} text (byte 0x{raw[e.start]:02x} "
                          f"at line {line}{hint}); save the file as UTF-8") from None


def load_spec(path: Union[str, Path]) -> ExperimentSpec:
    """Read a YAML (or JSON) experiment spec."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' not found; pass the path of a YAML spec such as "
                          f"configs/scratch_resnet20_synthetic.yaml")
    try:
        data = yaml.load(_config_text(path, path.read_bytes()), Loader=_yaml_loader())
    except OSError as e:
        raise ConfigError(f"config file '{path}' cannot be read ({e.strerror or e}); check its permissions") from None
    except yaml.reader.ReaderError as e:  # a character YAML does not allow, e.g. NUL from a UTF-16 file
        code = e.character if isinstance(e.character, int) else ord(e.character)
        hint = " (a UTF-16 file without its byte-order mark?)" if code == 0 else ""
        raise ConfigError(f"{path}: character #x{code:04x} at position {e.position} is not allowed in "
                          f"YAML{hint}; save the file as UTF-8 text") from None
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        at = f" at line {line + 1}" if line is not None else ""
        raise ConfigError(f"{path}: not valid YAML{at}; fix the syntax") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be an experiment spec") from None
    spec = from_dict(ExperimentSpec, data or {}, str(path))
    validate(spec, str(path))
    return spec
