"""The claims benchmark: paired comparisons, their intervals and verdicts, and the benchmark's run graph.

Verdicts come only from runs: the statistics are checked against hand-computed values on fabricated
rows, and an end-to-end run shows that a deliberately broken method (KD with its soft term weighted 0,
which trains exactly like the student alone) gets no "holds".
"""
import dataclasses
import math

import pytest
import torch

from benchmarks import Cell, Comparison, Paper, Table, claims, plan
from benchmarks.core import cell_specs
from kd_methods.report import metric_value, render_paper, table_comparisons, table_summaries
from kd_methods.report.compare import compare, iterations_to_reach, t_interval, verdict
from kd_methods.runs.runner import RunContext, execute
from kd_methods.runs.spec import ExperimentSpec, Optim, Phase
from kd_methods.runs.store import RunStore, read_curves, read_results


# -- statistics ----------------------------------------------------------------------------------------
def test_t_interval_matches_a_hand_computation():
    # mean 2, sample sd 1, t(0.975, 2) = 4.302653: half-width 4.302653 / sqrt(3) = 2.484138
    mean, low, high = t_interval([1.0, 2.0, 3.0])
    assert mean == pytest.approx(2.0) and low == pytest.approx(2 - 2.484138, abs=2e-6)
    assert high == pytest.approx(2 + 2.484138, abs=2e-6)
    # mean 1, sd sqrt(0.025) = 0.158114, t(0.975, 4) = 2.776445: half-width 0.196324
    mean, low, high = t_interval([1.0, 1.2, 0.8, 1.1, 0.9])
    assert (low, high) == (pytest.approx(1 - 0.196324, abs=2e-6), pytest.approx(1 + 0.196324, abs=2e-6))
    assert t_interval([0.7]) == (0.7, None, None) and t_interval([]) == (None, None, None)


@pytest.mark.parametrize("diffs, expected", [
    ([1.0, 1.2, 0.8, 1.1, 0.9], "holds"), ([-1.0, -1.2, -0.8, -1.1, -0.9], "reversed"),
    ([1.0, 2.0, 3.0], "inconclusive"), ([0.0, 0.0, 0.0], "inconclusive"), ([5.0], "inconclusive")])
def test_verdict_needs_the_whole_interval_on_one_side(diffs, expected):
    assert verdict(*t_interval(diffs)[1:]) == expected


# -- comparisons on fabricated rows -------------------------------------------------------------------------
def _row(seed, err, run_id=None, **extra):
    return dict(run_id=run_id or f"r{seed}-{err}", seed=str(seed), top1_err=str(err), extra="{}", **extra)


def _summaries(**arms):
    return {(row, "error (%)"): dict(cell=Cell(row, "error (%)", []), rows=rows) for row, rows in arms.items()}


def test_final_comparison_pairs_runs_by_seed_and_offset():
    summaries = _summaries(alone=[_row(0, 10.0), _row(1, 11.0), _row(2, 12.0), _row(3, 13.0)],
                           better=[_row(1000, 9.0), _row(1001, 10.5), _row(1002, 11.2)])  # no seed 3
    c = compare(Comparison("c", "better", "alone", seed_offset=1000), summaries, metric_value, lambda _: [])
    assert c["n"] == 3  # seed 3 of `alone` has no partner and is left out of both arms
    assert c["diff"] == pytest.approx((1.0 + 0.5 + 0.8) / 3)
    assert c["than_mean"] == pytest.approx(11.0) and c["than_std"] == pytest.approx(1.0)
    assert c["better_mean"] == pytest.approx((9.0 + 10.5 + 11.2) / 3)
    # differences 1.0, 0.5, 0.8: sd 0.251661, half-width 4.302653 * 0.251661 / sqrt(3) = 0.625161
    assert (c["low"], c["high"]) == (pytest.approx(0.766667 - 0.625161, abs=1e-5),
                                     pytest.approx(0.766667 + 0.625161, abs=1e-5))
    assert c["verdict"] == "holds"


def test_a_comparison_of_rows_with_several_cells_compares_the_column_it_names():
    """The fitting tables give each arm an error and a training cross-entropy: a comparison names its column
    (the error), and one that does not is refused with the row it could not decide on."""
    summaries = _summaries(alone=[_row(s, 10.0) for s in range(3)], dml=[_row(s, 9.0 + s / 10) for s in range(3)])
    ce = {(row, "training CE"): dict(cell=Cell(row, "training CE", [], "train_loss_ce"),
                                     rows=[dict(r, extra='{"train_loss_ce": 0.5}') for r in s_["rows"]])
          for (row, _), s_ in summaries.items()}
    both = {**summaries, **ce}
    c = compare(Comparison("c", "dml", "alone", col="error (%)"), both, metric_value, lambda _: [])
    assert c["diff"] == pytest.approx(0.9) and c["than_mean"] == pytest.approx(10.0)
    assert compare(Comparison("c", "dml", "alone", col="training CE"), both, metric_value, lambda _: [])["diff"] == 0
    with pytest.raises(KeyError, match="name a column"):
        compare(Comparison("c", "dml", "alone"), both, metric_value, lambda _: [])


def test_other_metrics_are_read_from_the_extra_column():
    summaries = _summaries(alone=[_row(s, 10.0) for s in range(3)],
                           net2=[dict(_row(s, 50.0), extra=f'{{"net2_top1_err": {9.0 - s / 10}}}') for s in range(3)])
    summaries[("net2", "error (%)")]["cell"] = Cell("net2", "error (%)", [], metric="net2_top1_err")
    c = compare(Comparison("c", "net2", "alone"), summaries, metric_value, lambda _: [])
    assert c["better_mean"] == pytest.approx(8.9) and c["diff"] == pytest.approx(1.1)


def _curve(errors, steps_per_epoch=100, stage="train"):
    return [dict(stage=stage, stage_iteration=float(steps_per_epoch * (i + 1)), top1_err=e)
            for i, e in enumerate(errors)]


def test_iterations_to_reach_counts_evaluated_epochs():
    curve = _curve([30.0, 20.0, 15.0, 14.0]) + _curve([99.0], stage="other")
    assert iterations_to_reach(curve, "train", "top1_err", 15.0) == (300.0, True)
    assert iterations_to_reach(curve, "train", "top1_err", 10.0) == (400.0, False)


def test_iterations_comparison_counts_how_many_fewer_and_notes_misses():
    curves = {"a0": _curve([30, 20, 16, 15]), "a1": _curve([30, 22, 18, 16]),
              "b0": _curve([18, 15, 14, 13]), "b1": _curve([25, 20, 17, 17])}   # b1 never reaches 16
    summaries = _summaries(alone=[_row(0, 15, "a0"), _row(1, 16, "a1")],
                           fsp=[_row(0, 13, "b0"), _row(1, 17, "b1")])
    c = compare(Comparison("fast", "fsp", "alone", kind="iterations"), summaries, metric_value, curves.get)
    assert c["n"] == 2 and c["than_mean"] == 400 and c["better_mean"] == (200 + 400) / 2
    assert c["diff"] == pytest.approx(100.0) and "1 of 2 runs never reached it" in c["note"]


# -- the report ------------------------------------------------------------------------------------------
def _claims_rows(budget, dataset):
    rows = []
    for s, (a, b) in enumerate([(12.0, 11.0), (12.5, 11.6), (11.8, 10.7)]):
        for label, err in (("alone | error (%)", a), ("kd | error (%)", b)):
            rows.append(dict(run_id=f"{label[:2]}{s}", paper="t", table="kd", label=label, dataset=dataset,
                             model="m", method="x", seed=str(s), budget=budget, top1_err=str(err),
                             top5_err="0", best_top1_err=str(err), status="finished", device="cpu", extra="{}"))
    return rows


def _tiny_paper():
    cells = [Cell("alone", "error (%)", []), Cell("kd", "error (%)", [])]
    table = Table("kd", "KD", cells, comparisons=[Comparison("KD beats alone", "kd", "alone")], paper_values=False)
    return Paper("t", "Tiny", "", [table])


@pytest.mark.parametrize("budget, dataset, testable", [("paper", "fashion_mnist", True), ("smoke", "synthetic_mnist", False)])
def test_the_report_shows_the_interval_and_a_verdict_only_for_real_runs(tmp_path, budget, dataset, testable):
    import csv
    (tmp_path / "t").mkdir()
    rows = _claims_rows(budget, dataset)
    with open(tmp_path / "t" / "runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    paper = _tiny_paper()
    render_paper(paper, tmp_path)
    text = (tmp_path / "t" / "kd.md").read_text()
    mean, low, high = t_interval([1.0, 0.9, 1.1])
    assert f"+{mean:.2f} points [{low:+.2f}, {high:+.2f}]" in text
    assert "paper:" not in text   # a table of our own: no paper column
    line = next(line for line in text.splitlines() if line.startswith("| KD beats alone"))
    assert ("**holds**" in line) == testable and ("smoke/synthetic: not a test" in line) == (not testable)
    # each arm's mean ± sample std by hand: kd 11.0, 11.6, 10.7 -> 11.10 ± 0.46; alone 12.0, 12.5, 11.8 -> 12.10 ± 0.36
    assert "| kd: 11.10 ± 0.46 | alone: 12.10 ± 0.36 |" in line


# -- the benchmark's declaration ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def paper():
    return claims.paper()


def test_every_comparison_names_rows_of_its_table_and_every_arm_has_the_seeds(paper):
    for table in paper.tables:
        rows = {c.row for c in table.cells}
        assert table.comparisons and not table.paper_values
        for comp in table.comparisons:
            assert {comp.better, comp.than} <= rows, (table.key, comp)
            better, than = ([c for c in table.cells if c.row == row and comp.col in (None, c.col)]
                            for row in (comp.better, comp.than))
            assert len(better) == len(than) == 1, (table.key, comp)  # each side names exactly one cell
            (better,), (than,) = better, than
            assert [s.seed - comp.seed_offset for s in better.specs] == [s.seed for s in than.specs], comp
            assert len(than.specs) in (claims.SEEDS, claims.MORE_SEEDS), comp
            assert [s.seed % claims.GENERATION_SEED for s in than.specs] == list(range(len(than.specs))), comp


def test_no_student_starts_from_its_teachers_initialisation(paper):
    for table in paper.tables:
        for cell in table.cells:
            for spec in cell.specs:
                for t in spec.teachers:
                    assert (t.model, t.seed) != (spec.model, spec.seed), (table.key, cell.row)

def test_the_dml_update_order_arms_differ_in_the_order_only(paper):
    """The evidence for DML's default order pairs each Algorithm 1 cohort with the same cohort (same seed,
    networks, data, schedule) updated from one forward pass, and nothing else differs."""
    table = next(t for t in paper.tables if t.key == "dml")
    cells = {c.row: c for c in table.cells}
    pairs = [(cells[comp.better], cells[comp.than]) for comp in table.comparisons if "update order" in comp.claim]
    assert [(a.metric, b.metric) for a, b in pairs] == [("top1_err", "top1_err"), ("net2_top1_err", "net2_top1_err")]
    for sequential, one_pass in pairs:
        for a, b in zip(sequential.specs, one_pass.specs, strict=True):
            assert (a.method_args["update_order"], b.method_args["update_order"]) == ("sequential", "simultaneous")
            assert dataclasses.replace(b, method_args=dict(b.method_args, update_order="sequential")) == a



def test_real_data_at_the_benchmark_budget_and_synthetic_at_smoke(paper, tmp_path):
    datasets = {b: {c["dataset"] for _, _, cfgs, _ in plan(paper, b, "auto", str(tmp_path)) for c in cfgs}
                for b in ("paper", "smoke")}
    assert datasets == {"paper": {"fashion_mnist", "mnist"}, "smoke": {"synthetic_mnist"}}
    cfgs = [c for _, _, cs, _ in plan(paper, "paper", "auto", str(tmp_path)) for c in cs]
    assert {c["test_subset"] for c in cfgs} == {None}     # scored on the whole test set
    # students learn from the subset; the teachers (and only they) from every training image
    students = [c for c in cfgs if c["teachers"]]
    assert {c["train_subset"] for c in students} == {claims.TRAIN_IMAGES, claims.FIT_IMAGES}
    fitting = [(t.key, c) for t, _, cs, _ in plan(paper, "paper", "auto", str(tmp_path)) for c in cs
               if c["train_subset"] == claims.FIT_IMAGES]  # the fitting-regime tables' runs
    assert {key for key, _ in fitting} == {"dml_fitting", "tolerant_fitting"}
    assert {c["train"]["length"] for _, c in fitting} == {claims.FIT_EPOCHS}
    assert {t["model"] for c in students for t in c["teachers"] if t["train_subset"] is None} == {
        claims.TEACHER, "fitnets_mnist_teacher"}


# -- end to end: a broken method cannot hold -----------------------------------------------------------------
@pytest.mark.slow
def test_a_kd_arm_with_its_soft_term_weighted_0_is_never_called_better(workdir):
    """KD with weight 0 trains exactly like the student alone with the same seed: every paired
    difference is 0, so the verdict is inconclusive, never holds."""
    phase = Phase(1, "epoch", Optim("sgd", lr=0.05, schedule="constant"))

    def tiny(method="scratch", teachers=(), seed=0, **args):
        return ExperimentSpec(model="cifar_resnet8", method=method, method_args=args, teachers=list(teachers),
                              dataset="synthetic_mnist", batch_size=16, train=phase, seed=seed,
                              train_subset=64, test_subset=64)

    teacher = tiny("scratch", seed=7)
    cells = [Cell("alone", "error (%)", [tiny(seed=s) for s in range(3)]),
             Cell("kd, weight 0", "error (%)", [tiny("kd", [teacher], s, weight=0.0) for s in range(3)])]
    table = Table("kd", "KD", cells, comparisons=[Comparison("KD beats alone", "kd, weight 0", "alone")],
                  paper_values=False)
    paper = Paper("broken", "Broken KD", "", [table])
    ctx = RunContext(store=RunStore(workdir / "runs"), results_dir=workdir / "results", log=lambda *_: None)
    for t, cell, cfgs, why in plan(paper, "paper", "synthetic", "data"):
        for cfg in cfgs:
            execute(dict(cfg, labels=dict(paper=paper.key, table=t.key, label=f"{cell.row} | {cell.col}")), ctx)
    rows = read_results(workdir / "results" / "broken" / "runs.csv")
    curves = read_curves(workdir / "results" / "broken" / "curves.csv")
    (c,) = table_comparisons(table, table_summaries(table, rows, "paper"), curves)
    assert c["n"] == 3 and c["diff"] == 0.0 and c["verdict"] == "inconclusive"


def test_the_fsp_diagnosis_rescales_convolutions_without_changing_what_the_network_computes():
    """The premise of benchmarks/fsp_diagnosis.py: every convolution of the ResNet-8 feeds a batch norm, so
    setting each convolution's weight norm back to its initial value leaves the training-mode output as it
    was (only the effective step size of later training changes)."""
    from benchmarks import fsp_diagnosis

    inflated = fsp_diagnosis.fresh(0)
    with torch.no_grad():
        for i, m in enumerate(m for m in inflated.modules() if isinstance(m, torch.nn.Conv2d)):
            m.weight.mul_(3.0 + i)  # a different inflation per layer, as FSP's stage 1 leaves them
    init = fsp_diagnosis.conv_norms(fsp_diagnosis.fresh(0))
    back = fsp_diagnosis.fresh(1)
    back.load_state_dict(fsp_diagnosis.rescaled(inflated, init))
    assert fsp_diagnosis.conv_norms(back) == pytest.approx(init, rel=1e-5)
    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    inflated.train(), back.train()
    with torch.no_grad():
        assert torch.allclose(back(x), inflated(x), atol=1e-4)
