"""Executors: where and when each run of a reproduction's graph trains.

Every executor trains a run through `kd_methods.runs.runner` (the one engine, the run's lock, resume from
its last checkpoint) and writes the reproduction's runs.csv rows (`RunGraph.records`), each once.

- `sequential` (the default): one run after another in this process, teachers first (`execute`); under
  torchrun all ranks train each run together. The first failure stops the reproduction.
- `ray`: every run is a Ray task that starts as soon as its teachers' tasks have finished, on any node
  of a Ray cluster, with the CPUs and (fractional) GPUs it asks for; a task whose worker dies is retried
  and resumes; a failed run stops only the runs that learn from it. `ray` is imported only here.
"""
from __future__ import annotations

import gc
from dataclasses import dataclass

from ...errors import ConfigError
from ..graph import RunGraph
from ..runner import RunContext, execute


@dataclass
class Failure:
    """A run that did not finish, and why."""
    run_id: str
    what: str        # "table | cell label" or the method, for the message
    kind: str        # diverged | bad input | error | worker lost | teacher failed
    message: str


class Sequential:
    """One run after another in this process (`execute` trains each teacher first, once)."""
    name = "sequential"

    def run(self, graph: RunGraph, ctx: RunContext, costs=None) -> list[Failure]:
        # What lives now (modules, the run graph) lives to the end: frozen, it leaves the collector's
        # sight, so the collection after each run scans that run's objects only (a full collection
        # costs 0.15 s a run). Once, before any run: a run's objects frozen while something still held
        # them would never be collected.
        gc.collect()
        gc.freeze()
        try:
            for cfg in graph.records:
                execute(cfg, ctx)
        finally:
            gc.unfreeze()  # a caller that goes on (a notebook, the tests) gets its collector back
        return []


def get_executor(name: str, **options):
    if name == "sequential":
        used = [f"--{k.replace('_', '-')}" for k, v in options.items() if v is not None]
        if used:
            raise ConfigError(f"{', '.join(used)} only appl{'ies' if len(used) == 1 else 'y'} to --executor ray; "
                              f"add --executor ray or drop {'it' if len(used) == 1 else 'them'}")
        return Sequential()
    if name == "ray":
        from .ray_executor import RayExecutor
        return RayExecutor(**options)
    raise ConfigError(f"unknown executor '{name}'; use sequential or ray")


def what(cfg: dict) -> str:
    labels = cfg.get("labels") or {}
    return f"{labels.get('table') or ''} {labels.get('label') or ''}".strip() or f"{cfg['method']} {cfg['model']}"


__all__ = ["Failure", "Sequential", "get_executor", "what"]
