"""One module per paper (`feed`, `dml`, `fitnets`, `fsp`, `tsd`), each exposing `paper() -> Paper`, and
`claims`: each paper's headline claim tested on real images at CPU scale.

`get_paper(key)` is the paper with its published values; `reproduce(key, ...)` trains every missing run
of the paper's tables (teachers first, each once; finished runs are reused, interrupted ones resume) and
then renders the paper's report; `render(keys, ...)` re-renders reports. The library (`kd_methods`)
never imports this package: it takes a paper as data.
"""
from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

from .core import (Cell, Comparison, Paper, Plot, Table, cell_label, generations, labelled, load_references, plan,
                   seeds)

PAPER_MODULES = ("feed", "dml", "fitnets", "fsp", "tsd", "claims")


def get_paper(key: str) -> Paper:
    if key not in PAPER_MODULES:
        from kd_methods.errors import ConfigError
        raise ConfigError(f"unknown paper '{key}'; use one of {', '.join(PAPER_MODULES)}")
    paper = importlib.import_module(f"{__name__}.{key}").paper()
    return dataclasses.replace(paper, references=paper.references or load_references(key))


def all_papers() -> list[Paper]:
    return [get_paper(key) for key in PAPER_MODULES]


def render(keys=PAPER_MODULES, results_dir: Path = Path("results")) -> None:
    """Re-render the reports of papers `keys` from their results/ files, then the index of every paper."""
    from kd_methods.report import render_all
    render_all([get_paper(k) for k in keys], Path(results_dir), index=all_papers())


def reproduce(key: str, budget: str = "paper", data: str = "auto", data_root: str = "data", ctx=None,
              tables=None, seeds: int | None = None, executor=None) -> None:
    """Train every missing run of paper `key` (`kd_methods.runs.reproduce`: sequential in this process
    unless `executor` says otherwise), then render its report and the results index."""
    from kd_methods.engine import distributed as dist
    from kd_methods.report import render_paper
    from kd_methods.errors import RunsFailed
    from kd_methods.runs.reproduce import reproduce as train
    from kd_methods.runs.runner import RunContext

    ctx = ctx or RunContext()
    paper = get_paper(key)

    def render():
        if dist.is_main():  # under torchrun every rank trains, rank 0 writes
            render_paper(paper, results_dir=Path(ctx.results_dir), index=all_papers())
    try:
        train(paper, budget, data, data_root, ctx, tables, seeds, executor)
    except RunsFailed:  # the runs that finished are reported all the same
        render()
        raise
    render()


__all__ = ["Cell", "Comparison", "Paper", "Plot", "Table", "generations", "labelled", "seeds", "get_paper",
           "all_papers", "reproduce", "render", "cell_label"]
