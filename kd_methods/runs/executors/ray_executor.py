"""The Ray executor: every run of the graph is a Ray task, started once its teachers' tasks are done.

A task gets its teachers' task results as arguments, so Ray itself holds it back until they exist and
then places it on any node with the CPUs and GPUs it asks for (`num_gpus` may be a fraction: 0.25 packs
four small runs on one GPU). The task trains through `runner.train_one`: the run's own folder and lock,
resume from its last checkpoint, the one engine. Ray retries a task whose worker died (a killed process,
a lost node) up to `retries` times, and the retry resumes from the run's last checkpoint. A run that
fails (NaN, bad input) returns its failure instead of raising; the runs learning from it return "teacher
failed" without training; every other run goes on. This process (the driver) writes the runs.csv rows,
each once, as runs finish and again in the graph's order at the end (the sequential executor's order),
and prints progress: runs done / running / waiting, and an ETA from the plan's FLOPs and the speed of
the runs finished so far.

Multi-node: start a Ray cluster (`ray start --head` on one node, `ray start --address HEAD:6379` on the
others) with the run and results folders and the data on a shared filesystem, and pass
`--address auto` (or HEAD:6379). Workers run in the driver's working directory (relative `--runs-dir`,
`--results-dir`, `--data-root` mean the same on every node when the paths are shared).
"""
from __future__ import annotations

import math
import os
import sys
import traceback
from pathlib import Path

from ...errors import ConfigError, NumericalFault, UserError
from ..graph import RunGraph
from ..runner import RunContext, record
from . import Failure, what

PROGRESS_EVERY_S = 30.0   # a progress line at least this often while runs train


def import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install 'kd-methods[ray]' (or pip install ray)") from None
    return ray


def train_task(cfg: dict, setup: dict, *teachers: dict) -> dict:
    """One run, on a Ray worker. `teachers`: the results of the teachers' tasks (Ray waits for them)."""
    from ...engine.trainer import EngineOptions  # noqa: F401  (unpickles setup["opts"])
    from ..runner import train_one
    from ..store import RunStore

    failed = [t for t in teachers if not t["ok"]]
    if failed:
        return dict(ok=False, run_id=cfg["run_id"], kind="teacher failed",
                    message=f"not trained: its teacher run {failed[0]['run_id']} did not finish")
    import torch
    os.chdir(setup["cwd"])
    torch.set_num_threads(setup["threads"])
    ctx = RunContext(store=RunStore(setup["runs_dir"]), results_dir=Path(setup["results_dir"]), opts=setup["opts"],
                     log=lambda msg: print(msg, flush=True))
    try:
        result = train_one(cfg, ctx)
    except NumericalFault as e:
        return dict(ok=False, run_id=cfg["run_id"], kind="diverged", message=str(e))
    except UserError as e:
        return dict(ok=False, run_id=cfg["run_id"], kind="bad input", message=str(e))
    except Exception as e:  # a bug: keep the traceback for the driver's report
        return dict(ok=False, run_id=cfg["run_id"], kind="error", message=f"{type(e).__name__}: {e}",
                    traceback=traceback.format_exc())
    return dict(ok=True, run_id=cfg["run_id"], wall_s=result.get("wall_s", 0.0))


class RayExecutor:
    name = "ray"
    wants_costs = True  # the plan's FLOPs per run, for the ETA

    def __init__(self, address: str | None = None, gpus_per_run: float | None = None,
                 cpus_per_run: int | None = None, retries: int | None = None):
        if gpus_per_run is not None and gpus_per_run < 0:
            raise ConfigError(f"--gpus-per-run must be >= 0, got {gpus_per_run}")
        if cpus_per_run is not None and cpus_per_run < 1:
            raise ConfigError(f"--cpus-per-run must be >= 1, got {cpus_per_run}")
        self.address = address
        self.gpus_per_run = gpus_per_run
        self.cpus_per_run = cpus_per_run or 1
        self.retries = 3 if retries is None else retries

    def run(self, graph: RunGraph, ctx: RunContext, costs=None) -> list[Failure]:
        if all(ctx.store.is_finished(r) for r in graph.nodes):  # nothing to train: no cluster needed
            for cfg in graph.records:
                record(cfg, ctx.store.result(cfg["run_id"]), ctx)
            return []
        ray = import_ray()
        if not sys.stdout.isatty():  # workers' log lines reach a file or a pipe: no colour codes
            os.environ.setdefault("RAY_COLOR_PREFIX", "0")
        started = not ray.is_initialized()
        if started:  # a local instance lives as long as this command: no dashboard (`ray start` has one)
            extra = {} if self.address else dict(include_dashboard=False)
            ray.init(address=self.address, logging_level="warning", log_to_driver=True, **extra)
        try:
            return self._run(ray, graph, ctx, costs)
        finally:
            if started:
                ray.shutdown()

    def _run(self, ray, graph: RunGraph, ctx: RunContext, costs) -> list[Failure]:
        store = ctx.store
        resources = ray.cluster_resources()
        gpus = self.gpus_per_run if self.gpus_per_run is not None else (1.0 if resources.get("GPU") else 0.0)
        if gpus and not resources.get("GPU"):
            raise ConfigError(f"--gpus-per-run {gpus} but the Ray cluster has no GPU; use --gpus-per-run 0")
        slots = _slots(resources, self.cpus_per_run, gpus)
        setup = dict(cwd=os.getcwd(), runs_dir=str(Path(store.root).resolve()),
                     results_dir=str(Path(ctx.results_dir).resolve()), opts=ctx.opts, threads=self.cpus_per_run)
        task = ray.remote(train_task)
        options = dict(num_cpus=self.cpus_per_run, num_gpus=gpus, max_retries=self.retries, retry_exceptions=False)
        rows = {}
        for cfg in graph.records:
            rows.setdefault(cfg["run_id"], []).append(cfg)
        refs, pending = {}, {}
        for run_id, node in graph.nodes.items():  # teachers first, so their refs exist
            if store.is_finished(run_id):
                continue
            cfg = (rows.get(run_id) or [node.cfg])[0]  # its first cell's labels (log lines, a failed row)
            refs[run_id] = task.options(name=f"train {run_id}", **options).remote(
                cfg, setup, *[refs[d] for d in node.deps if d in refs])
            pending[refs[run_id]] = run_id
        ctx.log(f"[ray] {len(pending)} of {len(graph.nodes)} runs to train on {_describe(resources)}; "
                f"{self.cpus_per_run} CPU{'s' if self.cpus_per_run > 1 else ''}"
                f"{f' and {gpus:g} GPU' if gpus else ''} per run, so {slots} at a time")
        # The plan's FLOPs (for the ETA) are counted here while the first runs train, not before them.
        progress = _Progress(graph, store, (costs() if callable(costs) else costs) or {}, slots, ctx.log)
        failures = []
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=PROGRESS_EVERY_S)
            for ref in ready:
                run_id = pending.pop(ref)
                try:
                    out = ray.get(ref)
                except ray.exceptions.RayError as e:  # the worker died more often than retried, a lost node
                    out = dict(ok=False, run_id=run_id, kind="worker lost", message=_first_line(e))
                if out["ok"]:
                    result = store.result(run_id)
                    for cfg in rows.get(run_id, []):
                        record(cfg, result, ctx)
                    progress.finished(run_id, out["wall_s"])
                else:
                    cfg = graph.nodes[run_id].cfg
                    failures.append(Failure(run_id, what((rows.get(run_id) or [cfg])[0]), out["kind"], out["message"]))
                    if out.get("traceback"):
                        ctx.log(out["traceback"].rstrip())
                    ctx.log(f"[failed] {run_id} ({failures[-1].what}): {out['kind']}: {out['message']}")
                    progress.failed(run_id)
            progress.report()
        for cfg in graph.records:  # the sequential executor's row order, each row once
            if store.is_finished(cfg["run_id"]):
                record(cfg, store.result(cfg["run_id"]), ctx)
        return failures


def _slots(resources: dict, cpus: int, gpus: float) -> int:
    by_cpu = int(resources.get("CPU", 0) // cpus)
    return max(1, min(by_cpu, int(resources.get("GPU", 0) // gpus)) if gpus else by_cpu)


def _describe(resources: dict) -> str:
    nodes = sum(1 for k in resources if k.startswith("node:") and not k.startswith("node:__internal"))
    gpus = f", {resources['GPU']:g} GPUs" if resources.get("GPU") else ""
    return f"{nodes} node{'s' if nodes != 1 else ''} ({resources.get('CPU', 0):g} CPUs{gpus})"


def _first_line(e: Exception) -> str:
    lines = [line for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__


class _Progress:
    """Counts of the graph's runs (done / running / waiting) and an ETA.

    Running = runs whose teachers are done, up to the number of slots the cluster has for them (the rest
    are queued). ETA = the larger of (FLOPs left / slots) and the longest chain of FLOPs left, at the
    FLOP rate of the runs finished so far (`costs`: run id -> FLOPs, from the plan); none before the
    first run finishes.
    """

    def __init__(self, graph: RunGraph, store, costs: dict, slots: int, log):
        self.graph, self.costs, self.slots, self.log = graph, costs, slots, log
        self.done = {r for r in graph.nodes if store.is_finished(r)}
        self.failed_ids: set[str] = set()
        self.flops_done = 0.0
        self.seconds_done = 0.0
        self.last = 0.0

    def finished(self, run_id: str, wall_s: float) -> None:
        self.done.add(run_id)
        if run_id in self.costs and wall_s:
            self.flops_done += self.costs[run_id]
            self.seconds_done += wall_s

    def failed(self, run_id: str) -> None:
        self.failed_ids.add(run_id)

    def report(self) -> None:
        left = [r for r in self.graph.nodes if r not in self.done and r not in self.failed_ids]
        ready = [r for r in left if all(d in self.done for d in self.graph.nodes[r].deps)]
        running = min(len(ready), self.slots)
        line = (f"[ray] {len(self.done)}/{len(self.graph.nodes)} runs done, {running} running, "
                f"{len(ready) - running} queued, {len(left) - len(ready)} waiting on teachers"
                + (f", {len(self.failed_ids)} failed" if self.failed_ids else ""))
        eta = self.eta(left)
        self.log(line + (f"; ETA {_hms(eta)}" if eta is not None and left else ""))

    def eta(self, left: list[str]) -> float | None:
        if not self.seconds_done or not all(r in self.costs for r in left):
            return None
        rate = self.flops_done / self.seconds_done  # FLOP/s of one run
        _, chain = self.graph.longest_path(lambda r: self.costs[r] if r in left else 0.0)
        return max(sum(self.costs[r] for r in left) / self.slots, chain) / rate


def _hms(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


__all__ = ["RayExecutor", "train_task", "import_ray"]
