"""Reports from fabricated runs.csv rows: every number a reader sees is checked against a hand computation.

Table cells (mean, sample std, n, the paper's value, ours - paper, error shown as accuracy), the rule that
smoke or synthetic numbers get no difference, "not run" reasons, the budget each table and plot picks,
the results index, and the data the plots draw (read back from the matplotlib figures).
"""
from __future__ import annotations

import itertools
import json
import math

import pytest
from matplotlib.figure import Figure

from benchmarks import all_papers, get_paper
from kd_methods.report import render_paper
from kd_methods.runs.store import append_results_row

GPU = "NVIDIA H100 80GB HBM3, bf16"
_ids = itertools.count()


def run(paper: str, table: str, label: str, seed: int, top1_err: float | None = None, budget: str = "short",
        dataset: str = "cifar100", **extra) -> dict:
    """A finished run's row as the runner writes it; `extra` goes to the JSON column (net2_top1_err, ...)."""
    return dict(run_id=f"run{next(_ids):06d}", paper=paper, table=table, label=label, dataset=dataset, model="m",
                method="scratch", seed=seed, budget=budget, epochs=200,
                top1_err="" if top1_err is None else top1_err, top5_err=10.0, best_top1_err=top1_err, wall_s=1.0,
                config_hash="h", status="finished", device=GPU, finished_at="2026-01-01T00:00:00",
                extra=json.dumps(extra))


def not_run(paper: str, table: str, label: str, why: str, budget: str = "short") -> dict:
    return dict(run_id="-", paper=paper, table=table, label=label, budget=budget, status=f"not run: {why}")


def render(tmp_path, monkeypatch, paper_key: str, rows: list[dict]):
    """Render `paper_key` from `rows`: ({table key: markdown}, {plot key: Figure}, results/README.md)."""
    for r in rows:
        append_results_row(tmp_path / "results", paper_key, r)
    figures = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: figures.append(fig))  # keep the Figure
    paper = get_paper(paper_key)
    render_paper(paper, results_dir=tmp_path / "results", index=all_papers())
    out = tmp_path / "results" / paper_key
    tables = {t.key: (out / f"{t.key}.md").read_text() for t in paper.tables}
    assert len(figures) == len(paper.plots)  # each plot saves one figure, in order
    return tables, dict(zip((p.key for p in paper.plots), figures)), (tmp_path / "results" / "README.md").read_text()


def cells(markdown: str) -> dict[tuple[str, str], list[str]]:
    """(row, col) -> the parts of the cell (ours, paper, difference) of the report's results table."""
    lines = list(itertools.takewhile(lambda line: line.startswith("|"),
                                     itertools.dropwhile(lambda line: not line.startswith("|"),
                                                         markdown.splitlines())))
    cols = [c.strip() for c in lines[0].strip("|").split("|")][1:]
    out = {}
    for line in lines[2:]:
        row, *values = [c.strip() for c in line.strip("|").split("|")]
        out.update({(row.strip("*"), col): v.split("<br>") for col, v in zip(cols, values)})
    return out


def index_line(readme: str, paper: str, table: str) -> list[str]:
    (line,) = [line for line in readme.splitlines() if line.startswith(f"| {paper} | {table} |")]
    return [c.strip() for c in line.strip("|").split("|")]


# -- DML Table 2: accuracy from errors, mean +- sample std, the difference ---------------------------
PAIR = "Net1=ResNet-32, Net2=ResNet-32"


def dml_rows(budget="short", dataset="cifar100") -> list[dict]:
    t = "table2"
    return [
        # Independent net1: errors 30, 31, 35 -> accuracy 68.00, sample std sqrt(7) = 2.65 (population: 2.16)
        *[run("dml", t, f"{PAIR} | Independent net1", s, e, budget, dataset) for s, e in enumerate([30, 31, 35])],
        # DML net2 is network 2 of the DML run: its error sits in the JSON column, net 1's must not be used
        run("dml", t, f"{PAIR} | DML net2", 0, 40.0, budget, dataset, net2_top1_err=28.5),
        run("dml", t, f"{PAIR} | DML net2", 1, 41.0, budget, dataset, net2_top1_err=29.5),
        # DML net1: errors 29, 30 -> accuracy 70.50 (for the gains plot)
        *[run("dml", t, f"{PAIR} | DML net1", s, e, budget, dataset) for s, e in enumerate([29, 30])],
        not_run("dml", t, "Net1=WRN-28-10, Net2=ResNet-32 | DML net1", "needs a GPU week (not present)", budget),
    ]


def test_table_cells_are_accuracy_mean_sample_std_n_paper_value_and_difference(tmp_path, monkeypatch):
    tables, _, _ = render(tmp_path, monkeypatch, "dml", dml_rows())
    md = tables["table2"]
    c = cells(md)
    sd = math.sqrt(((30 - 32) ** 2 + (31 - 32) ** 2 + (35 - 32) ** 2) / 2)  # sample std, n - 1
    assert c[(PAIR, "Independent net1")] == [f"**68.00** ± {sd:.2f} (n=3)", "paper: 68.99", "Δ -0.99"]
    assert c[(PAIR, "DML net2")] == ["**71.00** ± 0.71 (n=2)", "paper: 70.75", "Δ +0.25"]
    assert c[(PAIR, "DML net1")] == ["**70.50** ± 0.71 (n=2)", "paper: 71.19", "Δ -0.69"]
    assert c[(PAIR, "Independent net2")] == ["*not run*", "paper: 68.99"]
    assert c[("Net1=WRN-28-10, Net2=ResNet-32", "DML net1")] == ["*not run: needs a GPU week (not present)*",
                                                                 "paper: 78.96"]
    assert "- **Budget:** `short`" in md and "- **Data:** cifar100" in md and f"- **Hardware:** {GPU}" in md
    assert "- **Runs:** 7 finished" in md and "Smoke/synthetic numbers" not in md


@pytest.mark.parametrize("budget, dataset", [("smoke", "synthetic100"), ("short", "synthetic100")])
def test_smoke_or_synthetic_cells_show_no_difference_to_the_paper(tmp_path, monkeypatch, budget, dataset):
    tables, figures, readme = render(tmp_path, monkeypatch, "dml", dml_rows(budget, dataset))
    md = tables["table2"]
    assert cells(md)[(PAIR, "Independent net1")] == ["**68.00** ± 2.65 (n=3)", "paper: 68.99"]
    assert not any("Δ" in part for cell in cells(md).values() for part in cell)
    assert "**Smoke/synthetic numbers.**" in md
    assert index_line(readme, "dml", "table2")[6] == "—"  # no mean |difference| in the index either
    assert "synthetic/smoke — not a reproduction" in figures["table2_gains"].axes[0].get_title()


def test_results_index_states_budget_data_hardware_cells_and_mean_absolute_difference(tmp_path, monkeypatch):
    market_cell = next(t for t in get_paper("dml").tables if t.key == "table3_market1501").cells[0]
    rows = dml_rows() + [not_run("dml", "table3_market1501", f"{market_cell.row} | {market_cell.col}",
                                 "needs market1501 under data/ (not present)")]
    _, _, readme = render(tmp_path, monkeypatch, "dml", rows)
    n_cells = len(next(t for t in get_paper("dml").tables if t.key == "table2").cells)
    # |68.00 - 68.99|, |71.00 - 70.75|, |70.50 - 71.19| -> mean 0.643
    assert index_line(readme, "dml", "table2") == [
        "dml", "table2", "short", "cifar100", GPU, f"3 / {n_cells}", "0.64 over 3 cells", "[table2.md](dml/table2.md)"]
    market = index_line(readme, "dml", "table3_market1501")
    assert market[2] == "not run: needs market1501 under data/ (not present)" and market[5].startswith("0 / ")
    assert index_line(readme, "feed", "table1")[6] == "paper values not transcribed"


def test_gains_plot_draws_the_rows_mean_differences_beside_the_papers(tmp_path, monkeypatch):
    _, figures, _ = render(tmp_path, monkeypatch, "dml", dml_rows())
    ax = figures["table2_gains"].axes[0]
    ours, paper = ([bar.get_height() for bar in container] for container in ax.containers)
    labels = [t.get_text() for t in ax.get_xticklabels()]
    i = labels.index("ResNet-32/ResNet-32 net1")
    assert ours[i] == pytest.approx(32.0 - 29.5)      # mean Independent error - mean DML error
    assert paper[i] == pytest.approx(71.19 - 68.99)   # from the paper's accuracies
    assert all(math.isnan(h) for j, h in enumerate(ours) if j != i)  # no runs, no bar
    assert "budget: short" in ax.get_title() and "not a reproduction" not in ax.get_title()


# -- FitNets: each table (and plot) at its own most faithful budget; errors stay errors ------------------
T1_ROW, T4_ROW = "FitNet 4 (19 layers, ~2.5M params, HT + KD)", "FitNet (~30K params), HT + KD"


def test_each_table_and_plot_shows_its_own_most_faithful_budget(tmp_path, monkeypatch):
    rows = [run("fitnets", "table4", f"{T4_ROW} | misclassification", s, e, "short", "mnist")
            for s, e in enumerate([0.6, 0.8])]
    rows += [run("fitnets", "table4", f"{T4_ROW} | misclassification", 0, 9.0, "smoke", "synthetic_mnist")]
    rows += [run("fitnets", "table1", f"{T1_ROW} | accuracy", 0, 50.0, "smoke", "synthetic10")]
    rows += [run("fitnets", "table5", f"FitNet {k} | accuracy", 0, e, "short", "cifar10")
             for k, e in ((1, 12.0), (4, 9.5))]
    t3 = next(t for t in get_paper("fitnets").tables if t.key == "table3").cells[0]
    rows += [run("fitnets", "table3", f"{t3.row} | {t3.col}", 0, 2.5, "paper", "svhn")]  # the paper's budget
    tables, figures, readme = render(tmp_path, monkeypatch, "fitnets", rows)

    t4 = tables["table4"]  # short beats smoke; top-1 error shown as error (no 100 - x)
    assert "- **Budget:** `short`" in t4 and "Smoke/synthetic" not in t4
    assert cells(t4)[(T4_ROW, "misclassification")] == ["**0.70** ± 0.14 (n=2)", "paper: 0.51", "Δ +0.19"]
    t1 = tables["table1"]  # only smoke rows: shown at smoke, as accuracy, without a difference
    assert "- **Budget:** `smoke`" in t1 and "**Smoke/synthetic numbers.**" in t1
    assert cells(t1)[(T1_ROW, "accuracy")] == ["**50.00** ± 0.00 (n=1)", "paper: 91.61"]
    assert index_line(readme, "fitnets", "table4")[2:4] == ["short", "mnist"]
    assert index_line(readme, "fitnets", "table1")[2:4] == ["smoke", "synthetic10"]
    assert index_line(readme, "fitnets", "table3")[2:4] == ["paper", "svhn"]

    ax = figures["table5_tradeoff"].axes[0]  # the plot reads table 5 only, at table 5's budget (not table 3's)
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["ours"].get_xdata()) == [30.0, 382.0]  # the paper's #mult of FitNet 1 and FitNet 4
    assert list(lines["ours"].get_ydata()) == pytest.approx([88.0, 90.5])
    assert list(lines["paper"].get_ydata()) == pytest.approx([89.01, 91.06, 91.61, 91.1, 90.18])
    assert "budget: short" in ax.get_title()


# -- TSD: one line per tolerance term, the mean error of each generation ------------------------------------
def test_generation_lines_are_the_mean_errors_of_the_rows(tmp_path, monkeypatch):
    paper = get_paper("tsd")
    table = next(t for t in paper.tables if t.key.startswith("generations_"))
    term = table.rows[0]
    errors = {0: [30.0, 32.0], 1: [29.0], 3: [27.5, 28.5, 29.5]}  # generation -> errors over seeds; Gen 2: none
    rows = [run("tsd", table.key, f"{term} | Gen {g}", s, e) for g, es in errors.items() for s, e in enumerate(es)]
    _, figures, _ = render(tmp_path, monkeypatch, "tsd", rows)
    ax = figures["generations"].axes[0]
    (line,) = [line for line in ax.get_lines() if line.get_label() == term]
    assert list(line.get_xdata()) == [0, 1, 3]
    assert list(line.get_ydata()) == pytest.approx([31.0, 29.0, 28.5])
    assert len(ax.get_lines()) == 1  # the other terms have no runs
