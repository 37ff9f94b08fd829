"""FEED's figures, drawn from finished runs: runs.csv rows plus their per-epoch rows (curves.csv).

- `draw_probe_curves(table)`: Figures 4-5, the FT paraphraser's reconstruction loss per epoch
  (`loss_rec` in the "paraphraser" stage rows of each probe run's curve), one line per probed model.
- `draw_stacks(table)`: Table 4, top-1 error against the stack index, one panel per model and one line
  per method; Stack-0 is the teacher of the Stack-1 run (its runs.csv row names it; its curve gives its error).
- `draw_training_curves(table)`: test top-1 error per epoch of each cell's first run, one panel per row.

Each factory returns a `draw(paper, rows, budget, curves, path)` for `benchmarks.core.Plot`. Figures
use the budget the report chose; smoke/synthetic figures say so in their title, and a figure with no
finished runs says how to produce them.
"""
from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .plots import cell_runs, empty_panel, figure_title, paper_table, read_metrics, save, teacher_error


def draw_probe_curves(table_key: str, loss: str = "loss_rec", stage: str = "paraphraser"):
    """Figure 4/5: reconstruction loss per paraphraser epoch, one line per probe cell of `table_key`."""

    def draw(paper, rows, budget, curves, path):
        table = paper_table(paper, table_key)
        fig = Figure(figsize=(6.4, 4.2), layout="constrained")
        ax = fig.add_subplot()
        used = []
        for cell in table.cells:
            runs = cell_runs(rows, table.key, cell, budget)
            if not runs:
                continue
            points = [(r["stage_epoch"], r[loss]) for r in read_metrics(curves, runs[0]["run_id"])
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
            empty_panel(ax, paper.key)
        ax.set_title(figure_title(table.title.split(" (")[0], budget, used), fontsize=9)
        save(fig, path)

    return draw


def draw_stacks(table_key: str):
    """Table 4: top-1 error (mean over a cell's runs) against the stack index; one panel per model (the
    part of a row label before ", "), one line per method. Stack-0 is the teacher of the Stack-1 run."""

    def draw(paper, rows, budget, curves, path):
        table = paper_table(paper, table_key)
        models = list(dict.fromkeys(row.split(", ")[0] for row in table.rows))
        fig = Figure(figsize=(4.6 * min(len(models), 2), 3.8 * ((len(models) + 1) // 2)), layout="constrained")
        used = []
        for i, model in enumerate(models):
            ax = fig.add_subplot((len(models) + 1) // 2, min(len(models), 2), i + 1)
            drawn = False
            for row in (r for r in table.rows if r.split(", ")[0] == model):
                xs, ys = [], []
                for cell in (c for c in table.cells if c.row == row and c.col.startswith("Stack-")):
                    runs = cell_runs(rows, table.key, cell, budget)
                    if not runs:
                        continue
                    stack = int(cell.col.split("-")[-1])
                    if stack == 1:
                        base = teacher_error(rows, curves, runs[0]["run_id"])
                        if base is not None:
                            xs.append(0)
                            ys.append(base)
                    xs.append(stack)
                    ys.append(sum(float(r["top1_err"]) for r in runs) / len(runs))
                    used += runs
                if xs:
                    ax.plot(xs, ys, marker="o", label=row.split(", ")[-1])
                    drawn = True
            if drawn:
                ax.set_xlabel("stack (0 = scratch teacher)")
                ax.set_ylabel("top-1 error (%)")
                ax.set_xticks(range(0, sum(c.startswith("Stack-") for c in table.cols) + 1))
                ax.legend(fontsize=8)
                ax.grid(alpha=0.3)
            else:
                empty_panel(ax, paper.key)
            ax.set_title(model, fontsize=9)
        fig.suptitle(figure_title(f"{table.key}: top-1 error per stack", budget, used), fontsize=9)
        save(fig, path)

    return draw


def draw_training_curves(table_key: str):
    """Test top-1 error per epoch of the final stage, first run of each cell; one panel per table row.

    Evaluation-only cells (one row in their curve, e.g. the label ensemble) are drawn as dashed lines.
    """

    def draw(paper, rows, budget, curves, path):
        table = paper_table(paper, table_key)
        n = len(table.rows)
        fig = Figure(figsize=(5.0 * min(n, 2), 3.6 * ((n + 1) // 2)), layout="constrained")
        used = []
        for i, row in enumerate(table.rows):
            ax = fig.add_subplot((n + 1) // 2, min(n, 2), i + 1)
            drawn = False
            for j, cell in enumerate(c for c in table.cells if c.row == row):
                runs = cell_runs(rows, table.key, cell, budget)
                history = read_metrics(curves, runs[0]["run_id"]) if runs else []
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
                empty_panel(ax, paper.key)
            ax.set_title(row, fontsize=9)
        fig.suptitle(figure_title(f"{table.key}: test error per epoch (first run of each cell)", budget, used),
                     fontsize=9)
        save(fig, path)

    return draw
