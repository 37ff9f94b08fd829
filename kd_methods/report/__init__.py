"""runs.csv -> comparison tables (ours mean +- std beside the paper's value) and plots.

Everything here reads `results/<paper>/runs.csv` (and, for curves, the runs' metrics.csv): a report
can be re-rendered at any time without training. Numbers from smoke or synthetic runs are labelled
as such in every table heading and plot title.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from ..runs.spec import BUDGETS
from ..runs.store import read_results
from .markdown import render_table_markdown, write_text

BUDGET_ORDER = ("paper", "short", "smoke")


def finished(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r.get("status") == "finished"]


def chosen_budget(rows: list[dict], tables=()) -> str | None:
    """The most faithful budget with finished runs (of `tables`, default all): paper, else short, else
    smoke. Each table shows its own: one table run at `short` on real data does not hide another's."""
    present = {r["budget"] for r in finished(rows) if not tables or r["table"] in tables}
    return next((b for b in BUDGET_ORDER if b in present), None)


def metric_value(row: dict, metric: str) -> float | None:
    if row.get(metric, "") not in ("", None):
        return float(row[metric])
    extra = json.loads(row.get("extra") or "{}")
    return float(extra[metric]) if metric in extra else None


def summarize(values: list[float]) -> dict:
    n = len(values)
    if not n:
        return dict(n=0, mean=None, std=None)
    return dict(n=n, mean=statistics.fmean(values), std=statistics.stdev(values) if n > 1 else 0.0)


def cell_rows(rows: list[dict], table_key: str, label: str, budget: str) -> list[dict]:
    return [r for r in finished(rows) if r["table"] == table_key and r["label"] == label and r["budget"] == budget]


def not_run_reason(rows: list[dict], table_key: str, label: str) -> str:
    for r in rows:
        if r["table"] == table_key and r["label"] == label and r.get("status", "").startswith("not run"):
            return r["status"]
    return "not run"


def table_summaries(table, rows: list[dict], budget: str | None) -> dict:
    """(row, col) -> mean/std/n of the cell's runs at `budget`, the runs, or why it did not run."""
    from benchmarks import cell_label

    summaries = {}
    for cell in table.cells:
        label = cell_label(cell)
        picked = cell_rows(rows, table.key, label, budget) if budget else []
        values = [v for v in (metric_value(r, cell.metric) for r in picked) if v is not None]
        summaries[(cell.row, cell.col)] = dict(
            **summarize(values), cell=cell, rows=picked,
            reason="" if values else not_run_reason(rows, table.key, label))
    return summaries


def table_comparisons(table, summaries: dict, runs_dir: Path) -> list[dict]:
    """The table's claims (`Table.comparisons`) computed on its runs; see `compare`."""
    from .compare import compare, run_curve
    return [compare(c, summaries, metric_value, lambda run_id: run_curve(runs_dir, run_id))
            for c in getattr(table, "comparisons", ())]


def table_status(paper, table, rows: list[dict], refs: dict, runs_dir: Path = Path("runs")) -> dict:
    """One line of the results index: what ran, on what, how far from the paper, and the verdicts of
    the table's claims."""
    from .markdown import to_paper_metric

    budget = chosen_budget(rows, (table.key,))
    summaries = table_summaries(table, rows, budget)
    ran = [r for s in summaries.values() for r in s["rows"]]
    deltas = []
    for (row, col), s in summaries.items():
        ref = refs.get((table.key, row, col))
        if s["n"] and ref and ref["value"] is not None:
            deltas.append(abs(to_paper_metric(s["mean"], s["cell"].metric, table.paper_metric) - ref["value"]))
    needs = []  # the missing pieces named by the cells' "not run: needs A; needs B" reasons, once each
    for s in summaries.values():
        if not s["n"] and s["reason"].startswith("not run: "):
            needs += [n for n in s["reason"][len("not run: "):].split("; ") if n not in needs]
    verdicts = [c["verdict"] for c in table_comparisons(table, summaries, runs_dir) if c["n"]]
    return dict(budget=budget, cells=len(summaries), ran=sum(1 for s in summaries.values() if s["n"]),
                verdicts=verdicts, claims=len(getattr(table, "comparisons", ())),
                not_run="not run" + (": " + "; ".join(needs) if needs else ""),
                datasets=sorted({r["dataset"] for r in ran}),
                devices=sorted({r["device"] for r in ran if r["device"]}),
                compared=len(deltas), mean_abs_delta=statistics.fmean(deltas) if deltas else None,
                transcribed=sum(1 for k, r in refs.items() if k[0] == table.key and r["value"] is not None))


def render_paper(paper, results_dir: Path = Path("results"), runs_dir: Path = Path("runs"),
                 index: bool = True) -> list[Path]:
    """Every table and plot of `paper`; then results/README.md unless `index` is False (render_all
    writes it once after all papers)."""
    from benchmarks.core import load_references

    out_dir = Path(results_dir) / paper.key
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = read_results(out_dir / "runs.csv")
    refs = load_references(paper.key)
    written = []
    for table in paper.tables:
        budget = chosen_budget(rows, (table.key,))
        summaries = table_summaries(table, rows, budget)
        text = render_table_markdown(paper, table, summaries, refs, budget,
                                     table_comparisons(table, summaries, Path(runs_dir)))
        path = out_dir / f"{table.key}.md"
        write_text(path, text)
        written.append(path)
    for plot in paper.plots:
        path = out_dir / f"{plot.key}.png"
        plot.draw(paper=paper, rows=rows, budget=chosen_budget(rows, plot.tables), runs_dir=Path(runs_dir),
                  path=path)
        written.append(path)
    if index:
        write_index(Path(results_dir), Path(runs_dir))
    return written


def render_all(papers, results_dir: Path = Path("results"), runs_dir: Path = Path("runs")) -> None:
    from benchmarks import get_paper
    for key in papers:
        render_paper(get_paper(key), results_dir, runs_dir, index=False)
    write_index(Path(results_dir), Path(runs_dir))


def write_index(results_dir: Path, runs_dir: Path = Path("runs")) -> None:
    """results/README.md: every paper's tables with their status (see `table_status`) and plots."""
    from benchmarks import PAPER_MODULES, get_paper
    from benchmarks.core import load_references

    from .markdown import render_index

    papers = []
    for key in PAPER_MODULES:
        paper = get_paper(key)
        rows = read_results(Path(results_dir) / key / "runs.csv")
        refs = load_references(key)
        papers.append((paper, [(t, table_status(paper, t, rows, refs, runs_dir)) for t in paper.tables]))
    write_text(Path(results_dir) / "README.md", render_index(Path(results_dir), papers))


__all__ = ["render_paper", "render_all", "chosen_budget", "summarize", "metric_value", "BUDGETS"]
