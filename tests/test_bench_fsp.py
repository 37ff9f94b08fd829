"""benchmarks/fsp.py: the declaration resolves, its references match its cells, teachers are shared."""
import csv

import pytest

from benchmarks import cell_label, get_paper, reproduce
from benchmarks import fsp as F
from benchmarks.core import REFERENCES, load_references, plan
from kd_methods.runs.preflight import walk
from kd_methods.runs.spec import resolve


@pytest.fixture(scope="module")
def paper():
    return get_paper("fsp")


def tables(paper):
    return {t.key: t for t in paper.tables}


def cell(paper, table, row, col):
    return next(c for c in tables(paper)[table].cells if c.row == row and c.col == col)


def rid(spec, budget="paper"):
    return resolve(spec, budget)["run_id"]


@pytest.mark.parametrize("budget", ["smoke", "short", "paper"])
def test_every_cell_resolves(paper, budget):
    planned = plan(paper, budget, "auto", "data")
    assert len(planned) == sum(len(t.cells) for t in paper.tables)
    for table, c, cfgs, why in planned:
        assert cfgs, cell_label(c)
        if table.key == "table5":
            assert why.startswith("needs cub200") or why == ""
        else:
            assert why == "", (table.key, cell_label(c), why)


def test_distinct_runs_of_the_graph(paper):
    # Table 1: 7 rows x 3 nets + 7 ensembles + the Student∗ row's shared stage 1; Table 2: 4 x 3 + 4 + 1;
    # Table 3: 4 (its own teacher); Table 4: 3 (its teacher is Table 2's Teacher net1); Table 5: 5.
    for budget in ("smoke", "paper"):
        cfgs = [c for _, _, cs, _ in plan(paper, budget, "auto", "data") for c in cs]
        assert len({c["run_id"] for c in walk(cfgs)}) == 29 + 17 + 4 + 3 + 5


def test_smoke_uses_synthetic_stand_ins_and_two_iterations(paper):
    for table, c, cfgs, why in plan(paper, "smoke", "auto", "data"):
        if table.key == "table5":
            continue
        for cfg in walk(cfgs):
            # 16x16 stand-ins, except where FitNets' image-sized regressor keeps the set's own 32x32
            small = cfg["method"] != "fitnets" and cfg["dataset"].endswith("_16px")
            assert cfg["dataset"] in (("synthetic10_16px", "synthetic100_16px") if small else ("synthetic10", "synthetic100"))
            lengths = [p["length"] for p in [cfg["train"], *cfg["stages"].values()]]
            assert set(lengths) <= {0, 2} and lengths[0] == 2  # 0: a stage the run skips


def test_references_match_declared_cells(paper):
    refs = load_references("fsp")
    declared = {(t.key, c.row, c.col) for t in paper.tables for c in t.cells}
    assert set(refs) <= declared
    assert len(refs) == 68
    assert all(r["value"] is not None and r["metric"] == "top1_acc" for r in refs.values())
    assert refs[("table1", "Student∗†", "ensemble of 3")]["value"] == 93.67
    assert refs[("table4", "Proposed method (FSP)", "single net")]["value"] == 63.33
    with open(REFERENCES / "fsp.csv", newline="") as f:
        assert all(r["source"] for r in csv.DictReader(f))
    assert all(t.paper_metric == "top1_acc" for t in paper.tables)


def test_one_teacher_serves_every_distilled_row(paper):
    teacher = rid(cell(paper, "table1", "Teacher", "net1").specs[0])
    for row in ("1 loss FitNet∗", "3 loss FitNet∗", "Student∗", "Student∗†"):
        for s in cell(paper, "table1", row, "avg").specs:
            assert [rid(t) for t in s.teachers] == [teacher]


def test_minimisation_teachers_are_read_from_their_published_accuracies(paper):
    """Table 4's teacher (64.06) is Table 2's Teacher net1, the 4x-wide ResNet-32, so its student is the
    4x-wide ResNet-14; Table 3's (91.91) is none of Table 1's ResNet-26 nets: a fourth one, its own run."""
    refs = load_references("fsp")
    t4 = cell(paper, "table4", "Teacher-original (ResNet-32)", "single net").specs[0]
    assert rid(t4) == rid(cell(paper, "table2", "Teacher", "net1").specs[0])
    assert refs[("table4", "Teacher-original (ResNet-32)", "single net")]["value"] == \
        refs[("table2", "Teacher", "net1")]["value"] == 64.06
    for row in ("Student-original (ResNet-14)", "FitNet", "Proposed method (FSP)"):
        s = cell(paper, "table4", row, "single net").specs[0]
        assert s.model == "cifar_resnet14x4" and (s.method == "scratch" or rid(s.teachers[0]) == rid(t4))
    t3 = cell(paper, "table3", "Teacher-original (ResNet-26)", "single net").specs[0]
    published = refs[("table3", "Teacher-original (ResNet-26)", "single net")]["value"]
    table1 = [refs[("table1", row, f"net{k}")]["value"] for row in ("Teacher", "Teacher‡") for k in (1, 2, 3)]
    assert published not in table1 and min(table1) < published < max(table1)
    assert t3.model == "cifar_resnet26" and t3.train == cell(paper, "table1", "Teacher", "net1").specs[0].train
    table1_ids = {rid(c.specs[0]) for c in tables(paper)["table1"].cells if c.col.startswith("net")}
    assert rid(t3) not in table1_ids
    for row in ("FitNet", "Proposed method (FSP)"):
        s = cell(paper, "table3", row, "single net").specs[0]
        assert s.model == "cifar_resnet8" and rid(s.teachers[0]) == rid(t3)


def test_student_star_networks_branch_from_one_stage1_run_and_dagger_ones_do_not(paper):
    for key, iterations in (("table1", 21_000), ("table2", 32_000)):
        nets = [cell(paper, key, "Student∗", f"net{k}").specs[0] for k in (1, 2, 3)]
        assert len({rid(s.init) for s in nets}) == 1 and len({rid(s) for s in nets}) == 3
        stage1 = nets[0].init
        assert stage1.seed == nets[0].seed and stage1.method == "fsp" and stage1.init is None
        assert stage1.stages["fsp"].length == iterations and stage1.stages["train"].length == 0
        for s in nets:   # stage 1 skipped: each network trains its stage 2 from the shared student
            assert s.stages["fsp"].length == 0 and s.stages["train"].length == 21_000
            assert [rid(t) for t in s.teachers] == [rid(t) for t in stage1.teachers]
        cfg = resolve(nets[1], "smoke")
        assert cfg["init"]["run_id"] == rid(stage1, "smoke") and cfg["stages"]["fsp"]["length"] == 0
    for k in (1, 2, 3):
        dagger = cell(paper, "table1", "Student∗†", f"net{k}").specs[0]
        assert dagger.init is None and dagger.stages["fsp"].length == 21_000  # its own shuffled stage 1


def test_columns_are_seeds_their_mean_and_their_ensemble(paper):
    nets = [cell(paper, "table2", "Student∗", f"net{i}").specs[0] for i in (1, 2, 3)]
    assert [s.seed for s in nets] == [30, 31, 32]   # the 4th row: seeds 10 * 3 + k
    assert [rid(s) for s in cell(paper, "table2", "Student∗", "avg").specs] == [rid(s) for s in nets]
    (ens,) = cell(paper, "table2", "Student∗", "ensemble of 3").specs
    assert ens.method == "ensemble" and [rid(t) for t in ens.teachers] == [rid(s) for s in nets]


def test_no_two_networks_of_a_table_share_a_seed(paper):
    for key in ("table1", "table2"):
        table = tables(paper)[key]
        nets = [c.specs[0] for c in table.cells if c.col.startswith("net")]
        assert len({s.seed for s in nets}) == len(nets) == 3 * len(table.rows)
        assert [s.seed for s in nets[:3]] == [0, 1, 2]   # the Teacher row


def test_protocols(paper):
    teacher = cell(paper, "table1", "Teacher", "net1").specs[0]
    assert (teacher.model, teacher.dataset, teacher.augment) == ("cifar_resnet26", "cifar10", "crop_flip")
    assert (teacher.train.length, teacher.train.unit, teacher.train.optim.milestones) == (64000, "iter", [32000, 48000])
    assert teacher.train.optim.weight_decay == 1e-4 and teacher.train.optim.momentum == 0.9
    student = cell(paper, "table2", "Student∗", "net1").specs[0]
    assert (student.model, student.augment, student.method) == ("cifar_resnet32x4", "none", "fsp")
    stage1 = student.init.stages["fsp"]
    assert stage1.optim.lr == 1e-3 and stage1.optim.milestones == [16000, 24000]
    assert student.stages["train"].length == 21000 and student.stages["train"].optim.lr == 0.1
    fast = cell(paper, "table1", "Student∗", "net1").specs[0].init
    assert fast.stages["fsp"].length == 21000 and fast.stages["fsp"].optim.milestones == [11000, 16000]
    small = cell(paper, "table3", "Proposed method (FSP)", "single net").specs[0]
    assert small.model == "cifar_resnet8" and small.stages["train"].length == 64000


def test_dagger_rows_shuffle_with_their_own_permutations(paper):
    plain = cell(paper, "table1", "Student∗", "avg").specs
    dagger = cell(paper, "table1", "Student∗†", "avg").specs
    assert all(not s.method_args.get("shuffle") for s in plain)
    assert [s.method_args for s in dagger] == [{"shuffle": True, "shuffle_seed": s.seed} for s in dagger]
    assert len({s.seed for s in dagger}) == 3
    assert {rid(s) for s in plain}.isdisjoint(rid(s) for s in dagger)


def test_continued_teachers_start_from_their_own_net(paper):
    for k in (1, 2, 3):
        s = cell(paper, "table1", "Teacher‡", f"net{k}").specs[0]
        assert s.method == "finetune" and s.train.length == 21000
        assert rid(s.teachers[0]) == rid(cell(paper, "table1", "Teacher", f"net{k}").specs[0])


def test_fitnet_baselines_hint_then_train_on_labels(paper):
    one = cell(paper, "table1", "1 loss FitNet∗", "net1").specs[0]
    three = cell(paper, "table1", "3 loss FitNet∗", "net1").specs[0]
    assert one.method_args["hint_point"] == "middle"
    assert three.method_args["hint_point"] == ["stage1", "stage2", "stage3"]
    for s in (one, three):
        assert s.method_args["lambda_start"] == s.method_args["lambda_end"] == 0.0
        assert s.stages["hint"].optim.lr == 1e-3 and s.stages["kd"].length == 21000


def test_table5_is_not_run_without_cub(paper, tmp_path):
    rows = [p for p in plan(paper, "smoke", "auto", str(tmp_path)) if p[0].key == "table5"]
    assert len(rows) == 5 and all("cub200" in why for *_, why in rows)
    finetuned = cell(paper, "table5", "Teacher (ResNet-34), fine-tuned from ImageNet", "single net").specs[0]
    (pre,) = finetuned.teachers
    assert pre.path.endswith("resnet34-b627a593.pth") and pre.sha256 == "b627a593"
    fsp = cell(paper, "table5", "Proposed method (FSP, ResNet-18)", "single net").specs[0]
    assert rid(fsp.teachers[0]) == rid(finetuned) and fsp.model == "resnet18"


def test_table5_with_cub_but_without_weights_is_not_run_either(paper, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)   # the weights path is relative: data/pretrained/...
    (tmp_path / "data" / "cub200" / "CUB_200_2011").mkdir(parents=True)
    why = {c.row: w for t, c, _, w in plan(paper, "paper", "auto", "data") if t.key == "table5"}
    assert "cub200" not in " ".join(why.values())
    assert why["Teacher (ResNet-34), from scratch"] == ""
    assert why["Proposed method (FSP, ResNet-18)"] == \
        "needs pretrained weights data/pretrained/resnet34-b627a593.pth (not present)"


def test_iteration_curve_chains_stages():
    rows = [dict(stage="fsp", stage_iteration=390.0, top1_err=90.0),
            dict(stage="fsp", stage_iteration=500.0, top1_err=80.0),
            dict(stage="train", stage_iteration=390.0, top1_err=30.0),
            dict(stage="train", stage_iteration=700.0, top1_err=20.0)]
    assert F.iteration_curve(rows) == ([390.0, 500.0, 890.0, 1200.0], [10.0, 20.0, 70.0, 80.0])
    assert F.iteration_curve([dict(stage="eval", top1_err=5.0)]) == ([], [])


def test_a_branched_networks_curve_starts_with_its_shared_stage1():
    rows = [{"run_id": "m1", "init": "s1"}]   # the stage-1 run has no row of its own, only its curve
    curves = {"s1": [{"stage": "fsp", "stage_iteration": 100.0, "top1_err": 90.0}],
              "m1": [{"stage": "train", "stage_iteration": 100.0, "top1_err": 40.0}]}
    assert F.iteration_curve(F.run_history(rows, curves, "m1")) == ([100.0, 200.0], [10.0, 60.0])


def test_plot_without_runs_is_an_empty_figure(paper, tmp_path):
    path = tmp_path / "curve.png"
    F.draw_accuracy_vs_iteration(paper, [], None, tmp_path, path)
    assert path.stat().st_size > 1000


@pytest.mark.slow
def test_reproduce_smoke_table3(tmp_path):
    from kd_methods.runs.runner import RunContext
    from kd_methods.runs.store import RunStore, read_results

    ctx = RunContext(store=RunStore(tmp_path / "runs"), results_dir=tmp_path / "results", log=lambda m: None)
    reproduce("fsp", budget="smoke", data_root=str(tmp_path / "data"), ctx=ctx, tables=["table3"])
    rows = read_results(tmp_path / "results" / "fsp" / "runs.csv")
    labels = {r["label"] for r in rows if r["status"] == "finished" and r["table"] == "table3"}
    assert labels == {f"{row} | single net" for row in tables(get_paper("fsp"))["table3"].rows}
    # 16x16 stand-ins, but FitNets' image-sized regressor keeps CIFAR-10's 32x32
    assert all(r["dataset"] == ("synthetic10" if r["method"] == "fitnets" else "synthetic10_16px")
               and r["budget"] == "smoke" for r in rows)
    report = (tmp_path / "results" / "fsp" / "table3.md").read_text()
    lines = {line.split(" | ")[0].strip("|* "): line for line in report.splitlines() if line.startswith("| **")}
    for r in rows:  # each cell shows its run's accuracy, 100 - error (n=1), not the paper's number alone
        assert f"**{100 - float(r['top1_err']):.2f}** ± 0.00 (n=1)" in lines[r["label"].split(" | ")[0]]
    assert "paper: 88.70" in lines["Proposed method (FSP)"]
    assert "Smoke/synthetic numbers" in report and "Δ" not in report
    assert (tmp_path / "results" / "fsp" / "accuracy_vs_iteration.png").is_file()
