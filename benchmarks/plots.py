"""What every paper's plots share: finished runs of a cell, a run's metrics.csv, titles that label smoke
and synthetic figures, atomic PNG writes, and empty panels that say how to fill them."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from matplotlib.figure import Figure

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
        return [{k: number(v) for k, v in r.items()} for r in csv.DictReader(f)]


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


def number(v: str):
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def paper_table(paper, key: str):
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


def empty_panel(ax, paper_key: str, hint: str = "") -> None:
    """A panel with no finished runs says how to produce them (or `hint`)."""
    ax.text(0.5, 0.5, f"no finished runs yet\n{hint or f'run `make reproduce-{paper_key}`'}", ha="center",
            va="center", transform=ax.transAxes, fontsize=11, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])
