"""Tolerant-teacher (TSD) benchmark: lineages of generations, ensembles of them, references and plots."""
import csv
import json

import pytest

from benchmarks import cell_label, get_paper, reproduce, tsd
from benchmarks.core import load_references, plan
from kd_methods.runs.spec import resolve

BUDGETS = ("paper", "short", "smoke")
GEN = "generations_resnet110"
ENS = "ensemble_resnet110"


@pytest.fixture(scope="module")
def paper():
    return get_paper("tsd")


def cell(paper, key, row, col):
    return next(c for t in paper.tables if t.key == key for c in t.cells if c.row == row and c.col == col)


def cfg_of(paper, key, row, col, budget="paper"):
    (spec,) = cell(paper, key, row, col).specs
    return resolve(spec, budget)


def all_run_ids(plan_rows):
    ids = set()

    def walk(cfg):
        ids.add(cfg["run_id"])
        for t in cfg["teachers"]:
            walk(t)

    for _, _, cfgs, _ in plan_rows:
        for c in cfgs:
            walk(c)
    return ids


def test_every_cell_resolves_and_the_graph_has_the_expected_runs(paper):
    terms, gens = len(tsd.TERMS), tsd.N_GENERATIONS
    for budget in BUDGETS:
        planned = plan(paper, budget, "auto", "data")
        assert len(planned) == terms * (gens + 1) + terms * gens
        assert not any(why for *_, why in planned)
        # 6 trained generations per term; the 5 ensembles per term only evaluate.
        assert len(all_run_ids(planned)) == terms * (gens + 1) + terms * gens
        if budget == "smoke":
            assert {c["dataset"] for *_, cfgs, _ in planned for c in cfgs} == {"synthetic100_16px"}


def test_each_generation_is_taught_by_the_previous_one(paper):
    for row, term in tsd.TERMS.items():
        g0 = cfg_of(paper, GEN, row, "Gen 0")
        args = {"term": term, "tsd_anchor": "top"} if term == "tsd" else {"term": term}  # the paper's TSD
        assert (g0["method"], g0["method_args"], g0["teachers"]) == ("tolerant", args, [])
        previous, seeds = g0, {g0["seed"]}
        for m in range(1, tsd.N_GENERATIONS + 1):
            g = cfg_of(paper, GEN, row, f"Gen {m}")
            assert g["method"] == "tolerant_student" and g["model"] == "cifar_resnet110"
            assert [t["run_id"] for t in g["teachers"]] == [previous["run_id"]]
            seeds.add(g["seed"])
            previous = g
    assert len(seeds) == tsd.N_GENERATIONS + 1   # no generation starts from its teacher's initialisation


def test_lineages_of_different_terms_are_different_runs(paper):
    for m in range(tsd.N_GENERATIONS + 1):
        ids = {cfg_of(paper, GEN, row, f"Gen {m}")["run_id"] for row in tsd.TERMS}
        assert len(ids) == len(tsd.TERMS)


def test_ensembles_average_generations_zero_to_m(paper):
    for row in tsd.TERMS:
        gens = [cfg_of(paper, GEN, row, f"Gen {m}")["run_id"] for m in range(tsd.N_GENERATIONS + 1)]
        for m in range(1, tsd.N_GENERATIONS + 1):
            ens = cfg_of(paper, ENS, row, f"Gens 0-{m}")
            assert ens["method"] == "ensemble"
            assert [t["run_id"] for t in ens["teachers"]] == gens[: m + 1]


def test_protocol_and_its_smoke_scaling(paper):
    cfg = cfg_of(paper, GEN, "TSD", "Gen 0")
    assert (cfg["batch_size"], cfg["train"]["length"], cfg["train"]["unit"]) == (128, 64_000, "iter")
    assert cfg["train"]["optim"]["milestones"] == [32_000, 48_000]
    smoke = cfg_of(paper, GEN, "TSD", "Gen 0", "smoke")
    assert smoke["train"]["length"] == 2 and smoke["train"]["optim"]["milestones"] == [1.0, 1.5]
    assert smoke["dataset"] == "synthetic100_16px" and smoke["train_subset"] == 8


def test_references_cover_every_cell_and_are_empty(paper):
    declared = {(t.key, c.row, c.col) for t in paper.tables for c in t.cells}
    refs = load_references("tsd")
    assert set(refs) == declared
    assert all(r["value"] is None and "not transcribed" in r["note"] for r in refs.values())
    assert all(t.paper_metric == "top1_error" for t in paper.tables)


def test_plots_draw_from_runs_and_without_runs(paper, tmp_path):
    rows = [dict(run_id=f"{t.key}{i}", paper="tsd", table=t.key, label=cell_label(c), dataset="synthetic100",
                 budget="smoke", status="finished", top1_err=str(70 - i), extra="{}")
            for t in paper.tables for i, c in enumerate(t.cells)]
    for plot in paper.plots:
        for name, given in (("empty", []), ("full", rows)):
            path = tmp_path / f"{plot.key}_{name}.png"
            plot.draw(paper=paper, rows=given, budget="smoke" if given else None, curves={}, path=path)
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_reproduce_a_shortened_paper_end_to_end(tmp_path, monkeypatch):
    """Two terms, two generations of ResNet-8: every kind of run (patriarch, student, ensemble) and the report.
    (The full paper's smoke reproduction is timed separately; it is 44 runs of ResNet-110.)"""
    from kd_methods.runs.runner import RunContext
    from kd_methods.runs.store import RunStore

    monkeypatch.setattr(tsd, "NETWORKS", {"ResNet-8": "cifar_resnet8"})
    monkeypatch.setattr(tsd, "TERMS", {"no term (strict)": "none", "TSD": "tsd"})
    monkeypatch.setattr(tsd, "N_GENERATIONS", 2)
    ctx = RunContext(store=RunStore(tmp_path / "runs"), results_dir=tmp_path / "results", log=lambda *a: None)
    reproduce("tsd", budget="smoke", ctx=ctx)
    out = tmp_path / "results" / "tsd"
    with open(out / "runs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 3 + 2 * 2 and all(r["status"] == "finished" for r in rows)
    assert {r["method"] for r in rows} == {"tolerant", "tolerant_student", "ensemble"}
    gen2 = next(r for r in rows if r["label"] == "TSD | Gen 2")
    config = json.loads((tmp_path / "runs" / gen2["run_id"] / "config.json").read_text())
    assert config["teachers"][0]["teachers"][0]["method_args"] == {"term": "tsd", "tsd_anchor": "top"}
    for name in ("generations_resnet8.md", "ensemble_resnet8.md", "generations.png", "ensembles.png"):
        assert (out / name).stat().st_size > 0
