"""Catch what cannot run before anything runs.

Spec validation checks names, types and values; some errors only show when a method meets its models
(a feature map a method cannot connect, FSP between stages of different widths, a hint layer that does
not exist). `preflight` builds every distinct (method, student, teachers) combination of a run graph
once, on the CPU, with fresh weights, so such a pair fails in seconds with its one-line message instead
of after its teachers have trained for days.
"""
from __future__ import annotations

import json
from typing import Iterable

import torch

from ..data import get_spec
from ..errors import ConfigError
from ..methods import build_method
from ..models import create_model


def walk(cfgs: Iterable[dict]):
    for cfg in cfgs:
        yield cfg
        yield from walk(t for t in cfg["teachers"] if "run_id" in t)


def _num_classes(cfg: dict) -> int:
    return get_spec(cfg["dataset"]).num_classes or 1000


def _teacher_key(t: dict) -> tuple[str, int]:
    if "pretrained" in t:
        return t["pretrained"]["model"], t["pretrained"]["num_classes"]
    return t["model"], _num_classes(t)


def preflight(cfgs: Iterable[dict]) -> int:
    """Build each distinct combination once; returns how many were checked. Raises ConfigError."""
    seen = set()
    for cfg in walk(cfgs):
        teacher_keys = tuple(_teacher_key(t) for t in cfg["teachers"])
        key = (cfg["method"], cfg["model"], _num_classes(cfg), teacher_keys,
               json.dumps(cfg["method_args"], sort_keys=True))
        if key in seen:
            continue
        seen.add(key)
        with torch.random.fork_rng(devices=[]):
            cache = {}
            teachers = [cache.setdefault(k, create_model(k[0], num_classes=k[1])) for k in teacher_keys]
            student = create_model(cfg["model"], num_classes=_num_classes(cfg))
            try:
                build_method(cfg["method"], student, teachers, _num_classes(cfg), **cfg["method_args"])
            except (ValueError, KeyError, RuntimeError) as e:
                names = ", ".join(k[0] for k in teacher_keys) or "no teacher"
                raise ConfigError(f"method '{cfg['method']}' cannot connect student {cfg['model']} with "
                                  f"{names}: {e}") from None
    return len(seen)
