"""FEED's benchmark declaration: every cell resolves, teachers are shared, references match, plots draw."""
import csv

import pytest

from benchmarks import cell_label, feed, reproduce
from benchmarks.core import load_references, plan
from kd_methods.runs.spec import resolve
from kd_methods.runs.store import RUNS_COLUMNS

BUDGETS = ("smoke", "short", "paper")
NUMERIC_TABLES = ("table1", "table2", "table3", "table4", "table5")


@pytest.fixture(scope="module")
def paper():
    return feed.paper()


def table(paper, key):
    return next(t for t in paper.tables if t.key == key)


def cell(paper, key, row, col):
    return next(c for c in table(paper, key).cells if (c.row, c.col) == (row, col))


def rid(spec, budget="paper"):
    return resolve(spec, budget)["run_id"]


def all_run_ids(cfgs):
    out = set()
    for c in cfgs:
        if "run_id" in c:
            out.add(c["run_id"])
            out |= all_run_ids(c["teachers"])
    return out


@pytest.mark.parametrize("budget", BUDGETS)
def test_every_cell_resolves_and_only_imagenet_needs_real_data(paper, budget, tmp_path):
    planned = plan(paper, budget, "auto", str(tmp_path / "no_data"))
    assert len(planned) == sum(len(t.cells) for t in paper.tables)
    for tbl, c, cfgs, why in planned:
        assert cfgs, (tbl.key, c.row, c.col)
        imagenet = tbl.key in ("table3", "table5")
        assert bool(why) == imagenet and (not why or "imagenet" in why)
        if budget == "smoke":
            assert len(cfgs) == 1
            assert all(cfg["dataset"] in ("synthetic100_16px", "imagenet") for cfg in cfgs)


def test_declared_tables_and_shapes(paper):
    keys = [t.key for t in paper.tables]
    assert keys == ["table1", "table2", "table3", "table4", "table5", "fig4", "fig5"]
    models = list(feed.CIFAR_MODELS)
    assert table(paper, "table1").rows == models and table(paper, "table1").cols == ["Scratch", "AT", "L1", "FEED"]
    assert table(paper, "table2").cols == ["Scratch", "KD", "5xL1", "5xAT", "5xFT", "Ens", "pFEED"]
    assert table(paper, "table4").rows == [f"{m}, {r}" for m in models for r in ("sFEED", "FT", "KD", "BAN")]
    assert table(paper, "table4").cols == ["Scratch"] + [f"Stack-{m}" for m in range(1, 6)]
    assert table(paper, "table5").cols == [f"Stack-{m}" for m in range(1, 6)]
    for key in ("table3", "table5"):
        assert table(paper, key).rows == ["top-1 error", "top-5 error"]
        assert {c.metric for c in table(paper, key).cells} == {"top1_err", "top5_err"}
    assert {p.key for p in paper.plots} >= {"fig4", "fig5", "table4_stacks"}


def test_cifar_cells_use_the_protocol(paper):
    pfeed = resolve(cell(paper, "table2", "WRN-28-10", "pFEED").specs[0], "paper")
    assert (pfeed["model"], pfeed["method"], pfeed["dataset"], pfeed["batch_size"]) == \
        ("cifar_wrn_28_10", "feed", "cifar100", 128)
    assert pfeed["train"]["length"] == 200 and pfeed["train"]["optim"]["milestones"] == [100, 150]
    assert len(pfeed["teachers"]) == 5 and pfeed["seed"] == 5
    ft = resolve(cell(paper, "table2", "ResNet-56", "5xFT").specs[0], "paper")
    assert ft["stages"]["paraphraser"]["length"] == 5 and ft["stages"]["train"]["length"] == 200
    smoke = resolve(cell(paper, "table2", "ResNet-56", "5xFT").specs[0], "smoke")
    assert smoke["dataset"] == "synthetic100_16px" and smoke["train"]["length"] == 1
    short = resolve(cell(paper, "table1", "ResNet-110", "AT").specs[0], "short")
    assert short["train"]["length"] == 20 and short["train"]["optim"]["milestones"] == [10, 15]


def test_seed_counts_and_students_never_reuse_a_teacher_seed(paper):
    for c in table(paper, "table2").cells:
        expected = 1 if c.col == "Ens" else 5
        assert len(c.specs) == expected, (c.row, c.col)
        for spec in c.specs:
            teacher_seeds = {t.seed for t in spec.teachers}
            if spec.method not in ("scratch", "ensemble"):
                assert spec.seed not in teacher_seeds
    assert [s.seed for s in cell(paper, "table2", "ResNet-56", "Scratch").specs] == [0, 1, 2, 3, 4]


def test_scratch_teachers_are_shared_between_tables(paper):
    for name in feed.CIFAR_MODELS:
        scratch_ids = [rid(s) for s in cell(paper, "table2", name, "Scratch").specs]
        assert scratch_ids == [rid(s) for s in cell(paper, "table1", name, "Scratch").specs]
        for col in ("KD", "5xL1", "5xAT", "5xFT", "Ens", "pFEED"):
            for spec in cell(paper, "table2", name, col).specs:
                assert [t["run_id"] for t in resolve(spec)["teachers"]] == scratch_ids
        for col in ("AT", "L1", "FEED"):
            for spec in cell(paper, "table1", name, col).specs:
                assert [t["run_id"] for t in resolve(spec)["teachers"]] == scratch_ids[:1]


def test_table4_stacks_chain_generations_from_the_seed0_scratch_model_of_every_model(paper):
    for name, model in feed.CIFAR_MODELS.items():
        stack0 = rid(feed.scratch(model, 0))
        scratch_ids = [rid(s) for s in cell(paper, "table2", name, "Scratch").specs]
        for row in ("sFEED", "FT", "KD", "BAN"):
            label = f"{name}, {row}"
            assert [rid(s) for s in cell(paper, "table4", label, "Scratch").specs] == scratch_ids
            previous = stack0
            for m in range(1, 6):
                cfg = resolve(cell(paper, "table4", label, f"Stack-{m}").specs[0])
                assert cfg["method"] == feed.TABLE4_METHODS[row] and cfg["model"] == model
                assert [t["run_id"] for t in cfg["teachers"]] == [previous]
                previous = cfg["run_id"]
        # sFEED's first stack is exactly Table 1's first FEED student: one run serves both.
        assert rid(cell(paper, "table4", f"{name}, sFEED", "Stack-1").specs[0]) == \
            rid(cell(paper, "table1", name, "FEED").specs[0])


def test_plan_shows_table4_on_four_models_table5_with_five_stacks_and_table3_with_five_scratch_models(paper):
    """The issue's 'Done when', read from benchmarks.core.plan: Table 4 is 4 models x 4 methods x 5 stacks
    (+ a Scratch cell per row); Table 5 has five stacks; Table 3 reports five scratch models and its pFEED
    learns from the first three."""
    planned = plan(paper, "paper", "auto", "data", tables=["table3", "table4", "table5"])
    cells = {(t.key, c.row, c.col): cfgs for t, c, cfgs, _ in planned}
    stacks = {(row, col) for key, row, col in cells if key == "table4" and col.startswith("Stack-")}
    assert len(stacks) == 4 * 4 * 5
    assert {row.split(", ")[0] for row, _ in stacks} == set(feed.CIFAR_MODELS)
    assert {row.split(", ")[1] for row, _ in stacks} == set(feed.TABLE4_METHODS)
    assert {int(col[-1]) for _, col in stacks} == {1, 2, 3, 4, 5}
    table4 = {c["run_id"] for (key, *_), cfgs in cells.items() if key == "table4" for c in cfgs}
    assert len(table4) == 4 * 4 * 5 + 4 * 5   # every stack its own run; the 5 scratch models per model shared
    assert sorted(col for key, row, col in cells if key == "table5" and row == "top-1 error") == \
        [f"Stack-{m}" for m in range(1, 6)]
    chain = [cells[("table5", "top-1 error", f"Stack-{m}")][0] for m in range(1, 6)]
    assert chain[0]["teachers"][0]["pretrained"]["sha256"] == "b627a593"
    assert all([t["run_id"] for t in b["teachers"]] == [a["run_id"]] for a, b in zip(chain, chain[1:]))
    scratch = cells[("table3", "top-1 error", "Scratch")]
    (pfeed,) = cells[("table3", "top-1 error", "pFEED")]
    assert [c["seed"] for c in scratch] == [0, 1, 2, 3, 4] and {c["method"] for c in scratch} == {"scratch"}
    assert [t["run_id"] for t in pfeed["teachers"]] == [c["run_id"] for c in scratch[:3]]


def test_probes_train_a_paraphraser_on_the_probed_models(paper):
    fig4 = table(paper, "fig4")
    sfeed = [rid(cell(paper, "table4", "ResNet-56, sFEED", f"Stack-{m}").specs[0]) for m in range(1, 6)]
    probed = [resolve(c.specs[0])["teachers"][0]["run_id"] for c in fig4.cells]
    assert probed[1:] == sfeed and len(probed) == 6
    targets = {c.col: resolve(c.specs[0])["teachers"][0]["run_id"] for c in table(paper, "fig5").cells}
    assert targets == {col: rid(cell(paper, "table2", "ResNet-56", col).specs[0]) for col in ("Scratch", "KD", "pFEED")}
    # Figure 4's Stack-0 probe and Figure 5's Scratch probe are one run.
    assert rid(fig4.cells[0].specs[0]) == rid(cell(paper, "fig5", "ResNet-56", "Scratch").specs[0])
    cfg = resolve(fig4.cells[0].specs[0])
    assert cfg["method"] == "ft" and cfg["stages"]["paraphraser"]["length"] == 30
    assert (cfg["stages"]["train"]["length"], cfg["stages"]["train"]["unit"]) == (1, "iter")
    assert all(c.metric == feed.PROBE_METRIC for c in fig4.cells)


def test_imagenet_tables_use_the_torchvision_weights_as_table5s_base_model_only(paper):
    cfg = resolve(cell(paper, "table3", "top-1 error", "pFEED").specs[0])
    assert cfg["model"] == "resnet34" and cfg["dataset"] == "imagenet" and len(cfg["teachers"]) == 3
    assert all("run_id" in t for t in cfg["teachers"])  # the suite's scratch models, no pretrained one
    stack1 = resolve(cell(paper, "table5", "top-5 error", "Stack-1").specs[0])
    stack2 = resolve(cell(paper, "table5", "top-5 error", "Stack-2").specs[0])
    pretrained = stack1["teachers"][0]["pretrained"]
    assert pretrained["sha256"] == "b627a593" and pretrained["path"].endswith("resnet34-b627a593.pth")
    assert [t["run_id"] for t in stack2["teachers"]] == [stack1["run_id"]]


@pytest.mark.parametrize("budget, expected", [
    # per CIFAR model: 5 scratch + 3 (Table 1) + 6 (Table 2) students, x its seeds; Table 4: 4 models x 4 x 5
    # stacks, each model's sFEED Stack-1 shared with Table 1; probes: 6 + 3, one shared; ImageNet: the
    # scratch models (smoke: 3, the teachers; paper: 5) + pFEED + 5 stacks.
    ("smoke", 4 * (5 + 3 + 6) + (80 - 4) + (9 - 1) + (3 + 1 + 5)),
    ("paper", 4 * (5 + 3 * 5 + 4 * 5 + 1 + 5) + (80 - 4) + (9 - 1) + (5 + 1 + 5)),
])
def test_number_of_distinct_runs(paper, budget, expected, tmp_path):
    planned = plan(paper, budget, "auto", str(tmp_path))
    assert len(all_run_ids(cfg for _, _, cfgs, _ in planned for cfg in cfgs)) == expected


def test_references_cover_exactly_the_numeric_cells(paper):
    refs = load_references("feed")
    declared = {(t.key, c.row, c.col): c for t in paper.tables if t.key in NUMERIC_TABLES for c in t.cells}
    assert set(refs) == set(declared)
    published = {"WRN-28-10": 19.25, "ResNeXt-29 16x64d": 17.31, "ResNet-56": None, "ResNet-110": None}
    for key, ref in refs.items():
        assert ref["metric"] == declared[key].metric.replace("_err", "_error")
        if key[0] == "table4" and key[2] == "Scratch":  # the model's own paper, where it could be read
            assert ref["value"] == published[key[1].split(", ")[0]] and "Table 4" not in ref["source"]
            assert "not transcribed" in ref["note"] if ref["value"] is None else "own paper" in ref["note"]
        else:
            assert ref["value"] is None and "not transcribed" in ref["note"]
            assert f"Table {key[0][-1]}" in ref["source"]


def fake_run(curves, results, run_id, table_key, c, metrics, teacher=None, top1=50.0, budget="smoke"):
    curves[run_id] = [{k: v for k, v in m.items() if v != ""} for m in metrics]
    results.append({**dict.fromkeys(RUNS_COLUMNS, ""), "run_id": run_id, "table": table_key,
                    "label": cell_label(c), "budget": budget, "status": "finished", "dataset": "synthetic100",
                    "top1_err": str(top1), "teachers": teacher or ""})


def test_plot_helpers_read_probe_rows_and_the_stack0_teacher(paper, tmp_path):
    from benchmarks import plots as feed_plots

    curves, rows = {}, []
    probe = table(paper, "fig4").cells[2]
    fake_run(curves, rows, "p1", "fig4", probe, [
        {"epoch": 1.0, "stage": "paraphraser", "stage_epoch": 1.0, "loss_rec": 0.5, "top1_err": 99.0},
        {"epoch": 2.0, "stage": "paraphraser", "stage_epoch": 2.0, "loss_rec": 0.25, "top1_err": 99.0},
        {"epoch": 3.0, "stage": "train", "stage_epoch": 1.0, "loss_rec": "", "top1_err": 98.0}])
    fake_run(curves, rows, "t0", "other", cell(paper, "table2", "ResNet-56", "Scratch"),
             [{"epoch": 1.0, "stage": "train", "stage_epoch": 1.0, "top1_err": 40.0}], top1=40.0)
    fake_run(curves, rows, "s1", "table4", cell(paper, "table4", "ResNet-56, KD", "Stack-1"),
             [{"epoch": 1.0, "stage": "train", "stage_epoch": 1.0, "top1_err": 35.0}], teacher="t0", top1=35.0)
    assert [r["run_id"] for r in feed_plots.cell_runs(rows, "fig4", probe, "smoke")] == ["p1"]
    assert feed_plots.cell_runs(rows, "fig4", probe, "paper") == []
    paraphraser = [r["loss_rec"] for r in feed_plots.read_metrics(curves, "p1") if r["stage"] == "paraphraser"]
    assert paraphraser == [0.5, 0.25]
    assert feed_plots.teacher_error(rows, curves, "s1") == 40.0
    assert feed_plots.teacher_error(rows, curves, "t0") is None
    assert "not a reproduction" in feed_plots.figure_title("x", "smoke", rows)
    assert "not a reproduction" not in feed_plots.figure_title("x", "paper", [])
    for plot in paper.plots:
        for budget, used in (("smoke", rows), (None, [])):
            path = tmp_path / f"{plot.key}_{budget}.png"
            plot.draw(paper=paper, rows=used, budget=budget, curves=curves, path=path)
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_smoke_reproduction_of_figure5(tmp_path):
    """End to end at the smoke budget: Figure 5's probes and the runs they probe (ResNet-56 only)."""
    from kd_methods.runs.runner import RunContext
    from kd_methods.runs.store import RunStore, read_curves, read_results

    ctx = RunContext(store=RunStore(tmp_path / "runs"), results_dir=tmp_path / "results", log=lambda m: None)
    reproduce("feed", budget="smoke", data_root=str(tmp_path / "data"), ctx=ctx, tables=["fig5"])
    rows = read_results(tmp_path / "results" / "feed" / "runs.csv")
    assert {r["label"] for r in rows} == {f"ResNet-56 | {c}" for c in feed.FIG5_TARGETS}
    assert all(r["status"] == "finished" and r["budget"] == "smoke" and r["method"] == "ft" for r in rows)
    # 5 scratch teachers + KD and pFEED students + 3 probes
    assert len([p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]) == 10
    curves = read_curves(tmp_path / "results" / "feed" / "curves.csv")
    for r in rows:  # results/ holds each probe's curve (and its probed model's), as the run wrote it
        with open(tmp_path / "runs" / r["run_id"] / "metrics.csv", newline="") as f:
            stages = [m["stage"] for m in csv.DictReader(f)]
        assert stages[0] == "paraphraser" and stages[-1] == "train"
        assert [m["stage"] for m in curves[r["run_id"]]] == stages
        assert all(t in curves for t in r["teachers"].split()) and r["teachers"]
    for name in ("table1.md", "table2.md", "fig5.md", "fig5.png", "fig4.png", "table4_stacks.png"):
        assert (tmp_path / "results" / "feed" / name).stat().st_size > 0
    assert "not transcribed" in (tmp_path / "results" / "feed" / "table1.md").read_text()
