"""What every paper's plots share: finished runs of a cell, a run's per-epoch rows (results/<paper>/curves.csv),
titles that label smoke and synthetic figures, deterministic atomic PNG writes, and empty panels that say how
to fill them."""
from __future__ import annotations

import io
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


def read_metrics(curves: dict[str, list[dict]], run_id: str) -> list[dict]:
    """A run's per-epoch rows from results/<paper>/curves.csv (numbers as floats); [] if it has none."""
    return curves.get(run_id, [])


def teacher_error(rows: list[dict], curves: dict[str, list[dict]], run_id: str) -> float | None:
    """Top-1 error of the first teacher of run `run_id` (its runs.csv row's `teachers`; the error is the
    teacher's last curves.csv row, as in its result), else None."""
    row = next((r for r in rows if r["run_id"] == run_id), {})
    teachers = (row.get("teachers") or "").split()
    history = curves.get(teachers[0], []) if teachers else []
    last = history[-1].get("top1_err") if history else None
    return last if isinstance(last, float) else None


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
    # No metadata beyond the image (matplotlib writes its version otherwise): the same runs give the same
    # bytes, so a fresh clone's `make report` leaves the committed plots as they are.
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: f.write(buf.getvalue()))


def empty_panel(ax, paper_key: str, hint: str = "") -> None:
    """A panel with no finished runs says how to produce them (or `hint`)."""
    ax.text(0.5, 0.5, f"no finished runs yet\n{hint or f'run `make reproduce-{paper_key}`'}", ha="center",
            va="center", transform=ax.transAxes, fontsize=11, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])
