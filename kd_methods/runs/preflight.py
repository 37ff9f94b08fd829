"""Catch what cannot run before anything runs.

Spec validation checks names, types and values; some errors only show when a method meets its models
and data (a feature map a method cannot connect, FSP between stages of different widths, a teacher with
another label set, a model for 3-channel images on MNIST), when a dataset is not on disk, or when a
pretrained file is not the one the project recorded. `preflight` checks all of that for every run of a
graph before the first one trains, and writes nothing: each pretrained teacher and student init file is
verified against its sha256 and loaded; each distinct (method, student, teachers, input) combination is
built once, runs one forward pass of every stage on two random images and builds each stage's optimiser
(identical teachers count once: five copies of a network connect as one does): on the CPU with
uninitialised weights, or, for networks of 10M parameters and more, with fake tensors (shapes without
arithmetic), the CPU deciding whatever fails there; each distinct dataset is located and counted. So a
bad pair fails in seconds with its one-line message instead of after its teachers have trained for days.
"""
from __future__ import annotations

import copy
import functools
import gc
import json
from typing import Iterable

import torch

from ..data import DataConfig, get_spec
from ..engine import distributed as dist
from ..engine.optim import build_optimizer
from ..engine.trainer import data_config, init_student
from ..errors import ConfigError
from ..methods import METHODS, StepContext, build_method
from ..models import create_model
from ..models.features import SHAPES_ONLY_ABOVE
from .spec import walk


def _num_classes(cfg: dict) -> int:
    return get_spec(cfg["dataset"]).num_classes or 1000


def _teacher_key(t: dict) -> tuple:
    """(model, classes, image channels, ...): what builds the teacher (channels None: a pretrained file's
    network, built as saved)."""
    from .runner import image_channels
    if "pretrained" in t:
        p = t["pretrained"]
        return p["model"], p["num_classes"], None, p["path"], p["sha256"]
    return t["model"], _num_classes(t), image_channels(t)


def _train_size(cfg: dict, found: dict) -> int | None:
    """Images in the run's train split (None: a generated set at its default size, always enough)."""
    spec = get_spec(cfg["dataset"])
    if spec.generated:  # made in memory from a seed: never missing
        return cfg["train_subset"]
    key = (cfg["dataset"], cfg["data_root"])
    if key not in found:  # DataMissing (where we looked, how to get it) when it is not on disk
        if spec.kind == "tensor":
            _, train, _, test = spec.read(DataConfig(name=cfg["dataset"], root=cfg["data_root"]))
        else:
            train, test, _ = spec.scan(cfg["data_root"])
        found[key] = len(train), len(test)
    for subset, available, split in zip((cfg["train_subset"], cfg["test_subset"]), found[key], ("train", "test")):
        if subset is not None and subset > available:
            raise ConfigError(f"{split}_subset={subset} but {spec.title} has only {available} {split} images "
                              f"under {cfg['data_root']}; lower it or leave it unset")
    return cfg["train_subset"] or found[key][0]


def check_data(cfg: dict, found: dict) -> None:
    """The run's dataset is on disk and holds at least one batch (all ranks' shares together)."""
    world = dist.world_size()
    batch = data_config(cfg, world).batch_size * world  # ConfigError when the batch does not split
    n_train = _train_size(cfg, found)
    if n_train is not None and n_train < batch:
        raise ConfigError(f"{cfg['dataset']}: the train split has {n_train} images, fewer than one batch of "
                          f"{batch}; lower batch_size or raise train_subset")


@functools.cache
def _parameters(name: str, num_classes: int, in_chans: int | None = None) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in create_model(name, num_classes=num_classes, in_chans=in_chans).parameters())


def _connects_without_arithmetic(cfg: dict, teacher_keys: tuple, num_classes: int, input_size: tuple) -> bool:
    """For big networks (a ResNeXt-29 16x64d forward of two images costs 2 s of CPU): the combination
    built and probed with fake tensors, which compute every shape and no value. False when anything
    fails there (or the networks are small), and the CPU decides."""
    size = (_parameters(cfg["model"], num_classes, input_size[0])
            + sum(_parameters(k[0], k[1], k[2]) for k in teacher_keys))
    if size < SHAPES_ONLY_ABOVE:
        return False
    from torch._subclasses.fake_tensor import FakeTensorMode
    try:
        with FakeTensorMode():
            teachers = [create_model(k[0], num_classes=k[1], in_chans=k[2]) for k in teacher_keys]
            student = create_model(cfg["model"], num_classes=num_classes, in_chans=input_size[0])
            _probe(build_method(cfg["method"], student, teachers, num_classes, **cfg["method_args"]), input_size,
                   num_classes, cfg)
        return True
    except Exception:  # a real error, or a value-dependent operation fake tensors cannot run
        return False


def _uninitialised(name: str, num_classes: int, in_chans: int | None) -> torch.nn.Module:
    """The model with memory for its weights but no initialisation (its values do not matter here, only
    its shapes: a ResNeXt-29 16x64d's init alone takes 0.6 s of CPU)."""
    with torch.device("meta"):
        model = create_model(name, num_classes=num_classes, in_chans=in_chans)
    return model.to_empty(device="cpu")


def _probe(distiller, input_size: tuple[int, ...], num_classes: int, cfg: dict) -> None:
    """Every stage's training forward (or the eval models' forward) on two random images, and its
    optimiser (torch checks its values: Nesterov without momentum, Adam's betas, ...)."""
    images = torch.randn(2, *input_size)
    targets = torch.arange(2) % num_classes
    with torch.no_grad():
        stages = distiller.stages()
        distiller.train()
        for stage in stages:
            distiller(images, targets, StepContext(stage))
            phase = cfg["stages"].get(stage.name, cfg["train"])
            try:
                build_optimizer(distiller.parameters_for(stage), phase["optim"])
            except ValueError as e:
                where = f"stages.{stage.name}" if stage.name in cfg["stages"] else "train"
                raise ConfigError(f"{where}.optim: {e}; fix the optimiser's values") from None
        if not stages:
            for model in distiller.eval_models().values():
                model.eval()(images)


def preflight(cfgs: Iterable[dict]) -> int:
    """Check data, pretrained files and every distinct combination; returns how many combinations were
    built. Raises ConfigError, DataMissing or CheckpointError; writes nothing."""
    from .runner import load_teacher

    graph = list(walk(cfgs))
    pretrained = {}
    for cfg in graph:
        for t in cfg["teachers"]:
            if "pretrained" in t and _teacher_key(t) not in pretrained:
                pretrained[_teacher_key(t)] = load_teacher(t, None)  # sha256 first, then the weights' fit
    seen = set()
    for cfg in graph:
        teacher_keys = tuple(_teacher_key(t) for t in cfg["teachers"])
        distinct = tuple(dict.fromkeys(teacher_keys))  # five copies of one teacher connect as one does
        if len(distinct) >= METHODS.get(cfg["method"]).min_teachers:
            teacher_keys = distinct
        input_size = get_spec(cfg["dataset"]).input_size
        n = _num_classes(cfg)
        init = cfg.get("init")
        init = init if init and "run_id" not in init else None  # a run's student fits: same model, same data
        optimisers = [cfg["train"]["optim"]] + [cfg["stages"][k]["optim"] for k in sorted(cfg["stages"])]
        key = (cfg["method"], cfg["model"], n, input_size, teacher_keys, init and init["sha256"],
               json.dumps([cfg["method_args"], optimisers], sort_keys=True))
        if key in seen:
            continue
        seen.add(key)
        with torch.random.fork_rng(devices=[]):
            if not init and _connects_without_arithmetic(cfg, teacher_keys, n, input_size):
                continue
            # For real (uninitialised weights on the CPU): small networks, and whatever the fake run
            # tripped on (a shape error, a value-dependent operation), decided with the CPU's own message.
            fresh = {k: _uninitialised(k[0], k[1], k[2]) for k in teacher_keys if k not in pretrained}
            teachers = [copy.deepcopy(pretrained[k]) if k in pretrained else fresh[k] for k in teacher_keys]
            student = _uninitialised(cfg["model"], n, input_size[0])
            if init:
                init_student(student, init, n)  # sha256 first, then the weights' fit
            try:
                _probe(build_method(cfg["method"], student, teachers, n, **cfg["method_args"]), input_size, n, cfg)
            except (ValueError, KeyError, RuntimeError, TypeError) as e:
                names = ", ".join(f"{k[0]} ({k[1]} classes)" for k in teacher_keys) or "no teacher"
                shape = "x".join(map(str, input_size))
                reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise ConfigError(f"method '{cfg['method']}' cannot connect student {cfg['model']} ({n} classes) "
                                  f"with {names} on {cfg['dataset']} ({shape} images): {reason}") from None
    gc.collect()  # the probed networks (feature taps tie them into cycles) before any run trains
    found: dict = {}
    for cfg in graph:  # last: a config error is worth reporting before the data it would need
        check_data(cfg, found)
    return len(seen)
