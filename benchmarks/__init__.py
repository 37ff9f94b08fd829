"""One module per paper (`feed`, `dml`, `fitnets`, `fsp`, `tsd`), each exposing `paper() -> Paper`, and
`claims`: each paper's headline claim tested on real images at CPU scale.

`reproduce(key, ...)` trains every missing run of the paper's tables (teachers first, each once;
finished runs are reused, interrupted ones resume) and then renders the paper's report.
"""
from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

from .core import Cell, Comparison, Paper, Plot, Table, generations, labelled, plan, seeds

PAPER_MODULES = ("feed", "dml", "fitnets", "fsp", "tsd", "claims")


def get_paper(key: str) -> Paper:
    if key not in PAPER_MODULES:
        from kd_methods.errors import ConfigError
        raise ConfigError(f"unknown paper '{key}'; use one of {', '.join(PAPER_MODULES)}")
    return importlib.import_module(f"{__name__}.{key}").paper()


def cell_label(cell: Cell) -> str:
    return f"{cell.row} | {cell.col}"


def reproduce(key: str, budget: str = "paper", data: str = "auto", data_root: str = "data", ctx=None,
              tables=None, seeds: int | None = None) -> None:
    from kd_methods.engine import distributed as dist
    from kd_methods.report import render_paper
    from kd_methods.runs.preflight import preflight
    from kd_methods.runs.runner import RunContext, execute
    from kd_methods.runs.store import append_results_row

    ctx = ctx or RunContext()
    paper = get_paper(key)
    planned = plan(paper, budget, data, data_root, tables, seeds)
    runnable = [p for p in planned if not p[3]]
    preflight(cfg for _, _, cfgs, _ in runnable for cfg in cfgs)
    ctx.log(f"{paper.title}: {len(planned)} cells, {len(runnable)} runnable at budget '{budget}'")
    for i, (table, cell, cfgs, why) in enumerate(planned, 1):
        if why:
            ctx.log(f"[skip] {table.key} {cell_label(cell)}: {why}")
            if dist.is_main():
                append_results_row(ctx.results_dir, paper.key, dict(
                    run_id="-", paper=paper.key, table=table.key, label=cell_label(cell), budget=budget,
                    status=f"not run: {why}"))
            continue
        for cfg in cfgs:
            cfg = dict(cfg, labels=dict(paper=paper.key, table=table.key, label=cell_label(cell)))
            execute(cfg, ctx)
    if dist.is_main():  # under torchrun every rank trains, rank 0 writes
        render_paper(paper, results_dir=Path(ctx.results_dir), runs_dir=ctx.store.root)


__all__ = ["Cell", "Comparison", "Paper", "Plot", "Table", "generations", "labelled", "seeds", "get_paper", "reproduce",
           "cell_label"]
