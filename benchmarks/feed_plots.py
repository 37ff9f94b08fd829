"""FEED's figures, drawn from finished runs: runs.csv rows plus each run's metrics.csv.

- `draw_probe_curves(table)`: Figures 4-5, the FT paraphraser's reconstruction loss per epoch
  (`loss_rec` in the "paraphraser" stage rows of each probe run's metrics.csv), one line per probed model.
- `draw_stacks(table)`: Table 4, top-1 error against the stack index, one line per method; Stack-0 is
  the teacher of the Stack-1 run (read from that run's config.json).
- `draw_training_curves(table)`: test top-1 error per epoch of each cell's first run, one panel per row.

Each factory returns a `draw(paper, rows, budget, runs_dir, path)` for `benchmarks.core.Plot`. Figures
use the budget the report chose; smoke/synthetic figures say so in their title, and a figure with no
finished runs says how to produce them.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from kd_methods.engine.checkpoint import write_atomic

SMOKE_NOTE = "(synthetic/smoke — not a reproduction)"


# -- reading runs ------------------------------------------------------------------------------------
def cell_runs(rows: list[dict], table_key: str, cell, budget: str | None) -> list[dict]:
    """Finished runs.csv rows of one cell at `budget`, in the order the cell lists its seeds."""
    from . import cell_label

    label = cell_label(cell)
    return [r for r in rows if r.get("status") == "finished" and r["table"] == table_key
            and r["label"] == label and r["budget"] == budget]


def read_metrics(runs_dir: Path, run_id: str) -> list[dict]:
    """A run's per-epoch rows (numbers as floats where they parse); [] if the file is missing."""
    path = Path(runs_dir) / run_id / "metrics.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: _number(v) for k, v in r.items()} for r in csv.DictReader(f)]


def teacher_error(runs_dir: Path, run_id: str) -> float | None:
    """Top-1 error of the first teacher of run `run_id` (a finished run of the same store), else None."""
    cfg_path = Path(runs_dir) / run_id / "config.json"
    if not cfg_path.is_file():
        return None
    teachers = json.loads(cfg_path.read_text()).get("teachers", [])
    if not teachers or "run_id" not in teachers[0]:
        return None
    result = Path(runs_dir) / teachers[0]["run_id"] / "result.json"
    return float(json.loads(result.read_text())["top1_err"]) if result.is_file() else None


def _number(v: str):
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def _table(paper, key: str):
    return next(t for t in paper.tables if t.key == key)


# -- drawing -----------------------------------------------------------------------------------------
def figure_title(title: str, budget: str | None, rows: list[dict]) -> str:
    synthetic = any(str(r.get("dataset", "")).startswith("synthetic") for r in rows)
    if budget is None:
        return title
    note = f" {SMOKE_NOTE}" if budget == "smoke" or synthetic else ""
    return f"{title}\nbudget: {budget}{note}"


def save(fig: Figure, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: f.write(buf.getvalue()))


def _empty(ax, paper_key: str) -> None:
    ax.text(0.5, 0.5, f"no finished runs yet\nrun `make reproduce-{paper_key}`", ha="center", va="center",
            transform=ax.transAxes, fontsize=11, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def draw_probe_curves(table_key: str, loss: str = "loss_rec", stage: str = "paraphraser"):
    """Figure 4/5: reconstruction loss per paraphraser epoch, one line per probe cell of `table_key`."""

    def draw(paper, rows, budget, runs_dir, path):
        table = _table(paper, table_key)
        fig = Figure(figsize=(6.4, 4.2), layout="constrained")
        ax = fig.add_subplot()
        used = []
        for cell in table.cells:
            runs = cell_runs(rows, table.key, cell, budget)
            if not runs:
                continue
            points = [(r["stage_epoch"], r[loss]) for r in read_metrics(runs_dir, runs[0]["run_id"])
                      if r.get("stage") == stage and isinstance(r.get(loss), float)]
            if points:
                ax.plot(*zip(*points), marker="o", markersize=3, label=cell.col)
                used.append(runs[0])
        if used:
            ax.set_xlabel(f"{stage} epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(f"reconstruction loss ({loss})")
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
        else:
            _empty(ax, paper.key)
        ax.set_title(figure_title(table.title.split(" (")[0], budget, used), fontsize=9)
        save(fig, path)

    return draw


def draw_stacks(table_key: str):
    """Table 4: top-1 error (mean over a cell's runs) against the stack index, one line per row."""

    def draw(paper, rows, budget, runs_dir, path):
        table = _table(paper, table_key)
        fig = Figure(figsize=(6.4, 4.2), layout="constrained")
        ax = fig.add_subplot()
        used = []
        for row in table.rows:
            xs, ys = [], []
            for cell in (c for c in table.cells if c.row == row):
                runs = cell_runs(rows, table.key, cell, budget)
                if not runs:
                    continue
                stack = int(cell.col.split("-")[-1])
                if stack == 1:
                    base = teacher_error(runs_dir, runs[0]["run_id"])
                    if base is not None:
                        xs.append(0)
                        ys.append(base)
                xs.append(stack)
                ys.append(sum(float(r["top1_err"]) for r in runs) / len(runs))
                used += runs
            if xs:
                ax.plot(xs, ys, marker="o", label=row)
        if used:
            ax.set_xlabel("stack (0 = scratch teacher)")
            ax.set_ylabel("top-1 error (%)")
            ax.set_xticks(range(0, len(table.cols) + 1))
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
        else:
            _empty(ax, paper.key)
        ax.set_title(figure_title(f"{table.key}: top-1 error per stack", budget, used), fontsize=9)
        save(fig, path)

    return draw


def draw_training_curves(table_key: str):
    """Test top-1 error per epoch of the final stage, first run of each cell; one panel per table row.

    Evaluation-only cells (one row in metrics.csv, e.g. the label ensemble) are drawn as dashed lines.
    """

    def draw(paper, rows, budget, runs_dir, path):
        table = _table(paper, table_key)
        n = len(table.rows)
        fig = Figure(figsize=(5.0 * min(n, 2), 3.6 * ((n + 1) // 2)), layout="constrained")
        used = []
        for i, row in enumerate(table.rows):
            ax = fig.add_subplot((n + 1) // 2, min(n, 2), i + 1)
            drawn = False
            for j, cell in enumerate(c for c in table.cells if c.row == row):
                runs = cell_runs(rows, table.key, cell, budget)
                history = read_metrics(runs_dir, runs[0]["run_id"]) if runs else []
                if not history:
                    continue
                final = [r for r in history if r.get("stage") == history[-1].get("stage")]
                color = f"C{j}"
                if len(final) == 1:
                    ax.axhline(final[0]["top1_err"], ls="--", color=color, label=cell.col)
                else:
                    ax.plot([r["stage_epoch"] for r in final], [r["top1_err"] for r in final],
                            color=color, label=cell.col)
                drawn = True
                used.append(runs[0])
            if drawn:
                ax.set_xlabel("epoch")
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                ax.set_ylabel("test top-1 error (%)")
                ax.legend(fontsize=7)
                ax.grid(alpha=0.3)
            else:
                _empty(ax, paper.key)
            ax.set_title(row, fontsize=9)
        fig.suptitle(figure_title(f"{table.key}: test error per epoch (first run of each cell)", budget, used),
                     fontsize=9)
        save(fig, path)

    return draw
