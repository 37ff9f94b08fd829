"""A paper's reproduction: its cells' runs at a budget, as a graph, trained by an executor.

`reproduce(paper, ...)` resolves every cell at the budget, checks the whole graph before any work
(`preflight`), records the cells that cannot run here (missing data or weights) as "not run" rows, and
hands the run graph to an executor (sequential in this process by default, or Ray). The report is the
caller's (`benchmarks.reproduce` renders it). Runs that failed under an executor that carries on past
failures are listed, and `RunsFailed` carries the exit code.
"""
from __future__ import annotations

from ..engine import distributed as dist
from ..errors import RunsFailed
from .executors import Sequential
from .graph import RunGraph
from .preflight import preflight
from .runner import RunContext
from .store import append_results_row, check_results
from .tables import Paper, cell_label, plan_cells

# The exit code of each kind of failure (README "Exit codes"); the gravest (lowest but 0) wins.
EXIT_CODES = {"error": 1, "worker lost": 1, "bad input": 2, "diverged": 3, "teacher failed": 3}


def reproduce(paper: Paper, budget: str = "paper", data: str = "auto", data_root: str = "data",
              ctx: RunContext | None = None, tables=None, seeds: int | None = None, executor=None,
              costs=None) -> RunGraph:
    """Train every missing run of `paper`'s tables (or of `tables`); returns the run graph. `costs`:
    run id -> FLOPs from the plan (or a function returning them), for an executor's ETA."""
    ctx = ctx or RunContext()
    check_results(ctx.results_dir, paper.key)  # a damaged runs.csv stops before any training
    planned = plan_cells(paper, budget, data, data_root, tables, seeds)
    runnable = [p for p in planned if not p[3]]
    preflight(cfg for _, _, cfgs, _ in runnable for cfg in cfgs)
    ctx.log(f"{paper.title}: {len(planned)} cells, {len(runnable)} runnable at budget '{budget}'")
    for table, cell, _, why in planned:
        if why:
            ctx.log(f"[skip] {table.key} {cell_label(cell)}: {why}")
            if dist.is_main():
                append_results_row(ctx.results_dir, paper.key, dict(
                    run_id="-", paper=paper.key, table=table.key, label=cell_label(cell), budget=budget,
                    status=f"not run: {why}"))
    graph = RunGraph.from_cells(paper.key, planned)
    executor = executor or Sequential()
    if costs is None and getattr(executor, "wants_costs", False):
        costs = lambda: flops_left(graph, ctx)  # noqa: E731  (counted once the first runs train)
    failures = executor.run(graph, ctx, costs)
    if failures:
        for f in failures:
            ctx.log(f"[failed] {f.run_id} ({f.what}): {f.kind}: {f.message}")
        code = min(EXIT_CODES.get(f.kind, 1) for f in failures)
        kinds = ", ".join(sorted({f.kind for f in failures}))
        raise RunsFailed(f"{len(failures)} of {len(graph.nodes)} runs did not finish ({kinds}; listed above); "
                         f"the others finished. Fix the cause and run the same command again: finished runs "
                         f"are kept", code)
    return graph


def flops_left(graph: RunGraph, ctx: RunContext) -> dict[str, float]:
    """Training FLOPs of every run still to train (`kd-bench plan`'s count), for an executor's ETA."""
    import time

    from .cost import Costs

    t0, costs = time.perf_counter(), Costs()
    out = {r: costs.run(n.cfg).flops for r, n in graph.nodes.items() if not ctx.store.is_finished(r)}
    ctx.log(f"[plan] training FLOPs of {len(out)} runs counted for the ETA in {time.perf_counter() - t0:.1f} s")
    return out


__all__ = ["reproduce", "flops_left", "EXIT_CODES"]
