"""benchmarks/fitnets.py: the declaration resolves, its references match its cells, teachers are shared."""
import csv

import pytest

from benchmarks import cell_label, fitnets, get_paper, reproduce
from benchmarks.core import REFERENCES, load_references, plan
from kd_methods.runs.preflight import walk
from kd_methods.runs.spec import resolve


@pytest.fixture(scope="module")
def paper():
    return get_paper("fitnets")


def cell(paper, table, row):
    return next(c for t in paper.tables if t.key == table for c in t.cells if c.row == row)


def rid(spec, budget="paper"):
    return resolve(spec, budget)["run_id"]


TEACHER = "Teacher (maxout, 5 layers, ~9M params)"
FITNET4 = "FitNet 4 (19 layers, ~2.5M params, HT + KD)"


@pytest.mark.parametrize("budget", ["smoke", "short", "paper"])
def test_every_cell_resolves_and_runs_everywhere(paper, budget):
    planned = plan(paper, budget, "auto", "data")
    assert len(planned) == 2 + 2 + 2 + 5 + 5
    student_seeds = {"smoke": 1, "short": 2, "paper": 3}[budget]   # Table 4's students; every other cell: 1
    for table, c, cfgs, why in planned:
        mnist_student = table.key == "table4" and c.row.startswith("FitNet")
        assert why == "" and len(cfgs) == (student_seeds if mnist_student else 1), (table.key, cell_label(c))
        assert [cfg["seed"] for cfg in cfgs] == list(range(len(cfgs)))


def test_seeds_option_overrides_the_budget_cap(paper):
    counts = {(t.key, c.row): len(cfgs) for t, c, cfgs, _ in plan(paper, "short", "auto", "data", ["table4"], 3)}
    assert counts == {("table4", "Teacher (maxout, ~361K params)"): 1,
                      ("table4", "FitNet (~30K params), standard backprop"): 3,
                      ("table4", "FitNet (~30K params), KD"): 3, ("table4", "FitNet (~30K params), HT + KD"): 3,
                      ("table4", f"FitNet (~30K params), {fitnets.PAPER_INIT_ROW}"): 3}
    # every seed's student is taught by the one teacher run
    teachers = {cfg["teachers"][0]["run_id"] for t, c, cfgs, _ in plan(paper, "short", "auto", "data", ["table4"], 3)
                for cfg in cfgs if cfg["teachers"]}
    assert len(teachers) == 1


def test_distinct_runs_of_the_graph(paper):
    # Tables 1-3: teacher + FitNet 4 each; Table 4: teacher, scratch, KD, HT+KD; Table 5: FitNets 1-3 (its
    # teacher and FitNet 4 are Table 1's).
    for budget, students in (("smoke", 1), ("paper", 3)):
        cfgs = [c for _, _, cs, _ in plan(paper, budget, "auto", "data") for c in cs]
        assert len({c["run_id"] for c in walk(cfgs)}) == 2 + 2 + 2 + (1 + 4 * students) + 3


def test_smoke_swaps_in_synthetic_data(paper):
    datasets = {cfg["dataset"] for _, _, cfgs, _ in plan(paper, "smoke", "auto", "data") for cfg in walk(cfgs)}
    assert datasets == {"synthetic10", "synthetic100", "synthetic_mnist"}


def test_references_match_declared_cells(paper):
    refs = load_references("fitnets")
    declared = {(t.key, c.row, c.col) for t in paper.tables for c in t.cells}
    assert set(refs) == declared   # every trained cell has its paper value
    assert refs[("table1", FITNET4, "accuracy")]["value"] == 91.61
    assert refs[("table4", "FitNet (~30K params), HT + KD", "misclassification")]["value"] == 0.51
    assert refs[("table5", "FitNet 1", "accuracy")]["value"] == 89.01
    metrics = {t.key: t.paper_metric for t in paper.tables}
    assert metrics == {"table1": "top1_acc", "table2": "top1_acc", "table3": "top1_error",
                       "table4": "top1_error", "table5": "top1_acc"}
    assert all(r["metric"] == metrics[k[0]] for k, r in refs.items())
    with open(REFERENCES / "fitnets.csv", newline="") as f:
        assert all(r["source"] for r in csv.DictReader(f))


def test_table5_shares_table1_runs(paper):
    assert rid(cell(paper, "table5", "Teacher").specs[0]) == rid(cell(paper, "table1", TEACHER).specs[0])
    assert rid(cell(paper, "table5", "FitNet 4").specs[0]) == rid(cell(paper, "table1", FITNET4).specs[0])
    teacher = rid(cell(paper, "table1", TEACHER).specs[0])
    for i in (1, 2, 3, 4):
        s = cell(paper, "table5", f"FitNet {i}").specs[0]
        assert s.model == f"fitnet{i}" and [rid(t) for t in s.teachers] == [teacher]


def test_mnist_baselines_share_the_mnist_teacher(paper):
    teacher = cell(paper, "table4", "Teacher (maxout, ~361K params)").specs[0]
    assert (teacher.model, teacher.dataset) == ("fitnets_mnist_teacher", "mnist")
    scratch = cell(paper, "table4", "FitNet (~30K params), standard backprop").specs[0]
    kd = cell(paper, "table4", "FitNet (~30K params), KD").specs[0]
    ht = cell(paper, "table4", "FitNet (~30K params), HT + KD").specs[0]
    assert (scratch.method, kd.method, ht.method) == ("scratch", "kd", "fitnets")
    assert {s.model for s in (scratch, kd, ht)} == {"fitnet_mnist"}
    assert [rid(t) for t in kd.teachers] == [rid(t) for t in ht.teachers] == [rid(teacher)]
    assert kd.method_args == {"temperature": 3.0, "weight": pytest.approx(2 / 9)}
    assert ht.method_args == {"lambda_end": 0.0}


def test_protocol(paper):
    s = cell(paper, "table2", FITNET4).specs[0]
    assert (s.model, s.dataset, s.preprocess, s.batch_size) == ("fitnet4", "cifar100", "zca", 128)
    assert set(s.stages) == {"hint", "kd"}
    for phase in s.stages.values():
        assert (phase.length, phase.unit) == (288, "epoch")
        assert (phase.optim.name, phase.optim.schedule, phase.optim.alpha) == ("rmsprop", "constant", 0.9)
        assert phase.optim.lr == pytest.approx(0.005 * 0.05)   # the released configs' conv-layer lr
        assert phase.optim.weight_decay == 0.0
    assert s.method_args == {}   # the method's paper defaults: middle <- middle, lambda 4 -> 1, T = 3
    svhn = cell(paper, "table3", "FitNet 4 (19 layers, ~1.5M params, HT + KD)").specs[0]
    assert (svhn.dataset, svhn.augment) == ("svhn", "none")
    mnist = cell(paper, "table4", "FitNet (~30K params), HT + KD").specs[0]
    assert mnist.stages["kd"].optim.lr == 0.0005 and mnist.stages["kd"].length == 150


def test_tradeoff_plot_reads_table5_runs(paper, tmp_path):
    from benchmarks.fitnets import draw_tradeoff

    row = dict(run_id="x", table="table5", label="FitNet 2 | accuracy", budget="short", status="finished",
               top1_err="12.5", dataset="cifar10")
    for rows, name in (([], "empty.png"), ([row], "one.png")):
        draw_tradeoff(paper, rows, "short" if rows else None, tmp_path, tmp_path / name)
        assert (tmp_path / name).stat().st_size > 1000


@pytest.mark.slow
def test_reproduce_smoke_mnist_table(tmp_path):
    from kd_methods.runs.runner import RunContext
    from kd_methods.runs.store import RunStore, read_results

    ctx = RunContext(store=RunStore(tmp_path / "runs"), results_dir=tmp_path / "results", log=lambda m: None)
    reproduce("fitnets", budget="smoke", data_root=str(tmp_path / "data"), ctx=ctx, tables=["table4"])
    rows = read_results(tmp_path / "results" / "fitnets" / "runs.csv")
    finished = [r for r in rows if r["status"] == "finished"]
    assert {r["method"] for r in finished} == {"scratch", "kd", "fitnets"}
    assert len({r["label"] for r in finished}) == 5
    assert all(r["dataset"] == "synthetic_mnist" for r in finished)
    report = (tmp_path / "results" / "fitnets" / "table4.md").read_text()
    lines = {line.split(" | ")[0].strip("|* "): line for line in report.splitlines() if line.startswith("| **")}
    for r in finished:  # each cell shows its run's error (n=1), not the paper's number alone
        assert f"**{float(r['top1_err']):.2f}** ± 0.00 (n=1)" in lines[r["label"].split(" | ")[0]]
    assert "paper: 0.51" in lines["FitNet (~30K params), HT + KD"]
    assert "Smoke/synthetic numbers" in report and "Δ" not in report
    assert (tmp_path / "results" / "fitnets" / "table5_tradeoff.png").is_file()
