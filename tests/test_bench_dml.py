"""Deep Mutual Learning benchmark: the declaration resolves, shares runs, matches its references, and draws."""
import csv
import json
from pathlib import Path

import pytest

from benchmarks import cell_label, dml, get_paper, reproduce
from benchmarks.core import load_references, plan
from kd_methods.runs.spec import resolve

BUDGETS = ("paper", "short", "smoke")


@pytest.fixture(scope="module")
def paper():
    return get_paper("dml")


@pytest.fixture(scope="module")
def plans(paper, tmp_path_factory):
    """(table, cell, cfgs, why) of every cell, per budget, with no Market-1501 on disk."""
    root = str(tmp_path_factory.mktemp("no_data"))
    return {b: plan(paper, b, "auto", root) for b in BUDGETS}


def table(paper, key):
    return next(t for t in paper.tables if t.key == key)


def cell(paper, key, row, col):
    return next(c for c in table(paper, key).cells if c.row == row and c.col == col)


def run_ids(paper, key, row, col, budget="paper"):
    return [resolve(s, budget)["run_id"] for s in cell(paper, key, row, col).specs]


def all_run_ids(plan_rows):
    ids = set()

    def walk(cfg):
        ids.add(cfg["run_id"])
        for t in cfg["teachers"]:
            if "run_id" in t:
                walk(t)

    for _, _, cfgs, _ in plan_rows:
        for c in cfgs:
            walk(c)
    return ids


def test_every_cell_resolves_under_every_budget(paper, plans):
    n_cells = sum(len(t.cells) for t in paper.tables)
    for budget in BUDGETS:
        assert len(plans[budget]) == n_cells
        for _, c, cfgs, _ in plans[budget]:
            assert len(cfgs) == len(c.specs) == dml.N_SEEDS
    smoke = [cfg for _, _, cfgs, _ in plans["smoke"] for cfg in cfgs]
    assert {cfg["dataset"] for cfg in smoke} == {"synthetic100_16px", "market1501"}
    assert all(cfg["train"]["length"] <= 2 for cfg in smoke)


def test_smoke_graph_has_the_expected_distinct_runs(plans):
    # CIFAR-100: 3 independent + 6 Table 2 cohorts + 2 distilled + 3 cohorts (K=3..5) + 3 DML_e + the
    # ResNet-32 pair updated simultaneously = 18; Market-1501: 2 independent + 2 Table 4 cohorts + 2
    # distilled + 3 cohorts (K=3..5) = 9.
    for budget in BUDGETS:
        assert len(all_run_ids(plans[budget])) == 27
    runnable = [p for p in plans["smoke"] if not p[3]]
    assert len(all_run_ids(runnable)) == 18


def test_market_cells_are_not_run_without_the_dataset(plans):
    for t, _, cfgs, why in plans["smoke"]:
        market = cfgs[0]["dataset"] == "market1501"
        assert bool(why) == market, (t.key, why)
        if market:
            assert "market1501" in why


def test_runs_are_shared_between_tables(paper):
    r32 = "Net1=ResNet-32, Net2=ResNet-32"
    independent = run_ids(paper, "table2", r32, "Independent net1")
    assert independent == run_ids(paper, "table2", r32, "Independent net2")   # one run per architecture
    assert independent == run_ids(paper, "table2", "Net1=WRN-28-10, Net2=ResNet-32", "Independent net2")
    assert independent == run_ids(paper, "cohort_cifar100", "K=1", "net1")
    assert independent == run_ids(paper, "entropy", "ResNet-32", "Independent")
    mutual = run_ids(paper, "table2", r32, "DML net1")
    assert mutual == run_ids(paper, "table2", r32, "DML net2") == run_ids(paper, "cohort_cifar100", "K=2", "net2")
    assert mutual == run_ids(paper, "entropy", "ResNet-32", "DML")
    assert run_ids(paper, "cohort_cifar100", "K=4", "net1") == run_ids(paper, "dml_vs_dmle", "K=4", "DML")
    assert run_ids(paper, "dml_vs_dmle", "K=4", "DML") != run_ids(paper, "dml_vs_dmle", "K=4", "DML_e")
    wrn = "Net1=WRN-28-10, Net2=ResNet-32"
    assert run_ids(paper, "table4_cifar100", wrn, "DML net2") == run_ids(paper, "table2", wrn, "DML net1")


def test_distillation_student_learns_from_the_independent_net1_run(paper):
    row = "Net1=MobileNet, Net2=ResNet-32"
    (student,) = [resolve(s) for s in cell(paper, "table4_cifar100", row, "1 distills 2").specs]
    assert student["method"] == "kd" and student["model"] == "cifar_resnet32"
    assert student["method_args"] == {"temperature": 1.0, "weight": 1.0}
    assert [t["run_id"] for t in student["teachers"]] == run_ids(paper, "table4_cifar100", row, "Independent net1")
    assert student["seed"] != student["teachers"][0]["seed"]   # not its teacher's initialisation


def test_cells_read_the_network_they_name(paper):
    c = cell(paper, "table2", "Net1=WRN-28-10, Net2=MobileNet", "DML net2")
    cfg = resolve(c.specs[0])
    assert c.metric == "net2_top1_err"
    assert cfg["model"] == "cifar_wrn_28_10" and cfg["method_args"]["peers"] == ["cifar_mobilenet"]
    for c in table(paper, "cohort_cifar100").cells:
        k, i = int(c.row.split("=")[1]), int(c.col[3:])
        assert i <= k
        assert c.metric == ("top1_err" if i == 1 else f"net{i}_top1_err")
        peers = resolve(c.specs[0])["method_args"].get("peers", [])
        assert len(peers) == k - 1
    dmle = resolve(cell(paper, "dml_vs_dmle", "K=5", "DML_e").specs[0])
    assert dmle["method_args"] == {"peers": ["cifar_resnet32"] * 4, "variant": "dml_e", "update_order": "sequential"}
    assert cell(paper, "table4_market1501", "Net1=InceptionV1, Net2=MobileNet", "DML net2").metric == "net2_mAP"


def test_protocols_follow_the_paper(paper):
    cfg = resolve(cell(paper, "table2", "Net1=ResNet-32, Net2=ResNet-32", "DML net1").specs[0])
    optim = cfg["train"]["optim"]
    assert (cfg["batch_size"], cfg["augment"], cfg["dataset"]) == (64, "crop_flip_reflect", "cifar100")
    assert (cfg["train"]["length"], cfg["train"]["unit"]) == (200, "epoch")
    assert (optim["name"], optim["lr"], optim["momentum"], optim["nesterov"]) == ("sgd", 0.1, 0.9, True)
    assert (optim["schedule"], optim["step_size"], optim["gamma"]) == ("step", 60, 0.1)
    m = resolve(cell(paper, "table4_market1501", "Net1=MobileNet, Net2=MobileNet", "DML net1").specs[0])
    assert (m["batch_size"], m["train"]["length"], m["train"]["unit"]) == (16, 100_000, "iter")
    assert (m["train"]["optim"]["name"], m["train"]["optim"]["lr"]) == ("adam", 2e-4)
    assert (m["train"]["optim"]["momentum"], m["train"]["optim"]["alpha"]) == (0.5, 0.999)   # beta1, beta2
    short = resolve(cell(paper, "table2", "Net1=ResNet-32, Net2=ResNet-32", "DML net1").specs[0], "short")
    assert short["train"]["length"] == 20 and short["train"]["optim"]["step_size"] == pytest.approx(6)


def test_references_match_declared_cells(paper):
    declared = {(t.key, c.row, c.col) for t in paper.tables for c in t.cells}
    refs = load_references("dml")
    assert set(refs) <= declared
    for t in ("table2", "table4_cifar100", "table4_market1501", "entropy", "table3_market1501"):
        assert {k for k in declared if k[0] == t} <= set(refs), t
    assert refs[("table2", "Net1=ResNet-32, Net2=ResNet-32", "DML net1")]["value"] == 71.19
    assert "2.20" in refs[("table2", "Net1=ResNet-32, Net2=ResNet-32", "DML net1")]["note"]
    assert refs[("table4_cifar100", "Net1=WRN-28-10, Net2=ResNet-32", "1 distills 2")]["value"] == 69.48
    assert refs[("entropy", "ResNet-32", "DML")]["value"] == pytest.approx(1.7099)
    assert all(r["value"] is None for k, r in refs.items() if k[0] == "table3_market1501")
    with open(Path(dml.__file__).parent / "references" / "dml.csv", newline="") as f:
        keys = [(r["table"], r["row"], r["col"]) for r in csv.DictReader(f)]
    assert len(keys) == len(set(keys))


def test_every_dml_run_names_its_update_order_and_the_order_table_runs_both(paper, plans):
    """Algorithm 1's sequential order is every DML run's (named, so runs of another order are never
    reused); the update_order table sets Table 2's ResNet-32 pair beside its simultaneous form."""
    dml_cfgs = [c for _, _, cfgs, _ in plans["paper"] for c in cfgs if c["method"] == "dml"]
    assert dml_cfgs and all("update_order" in c["method_args"] for c in dml_cfgs)
    r32 = "Net1=ResNet-32, Net2=ResNet-32"
    for k in (1, 2):
        seq = run_ids(paper, "update_order", "sequential (Algorithm 1)", f"DML net{k}")
        sim = run_ids(paper, "update_order", "simultaneous (one forward pass)", f"DML net{k}")
        assert seq == run_ids(paper, "table2", r32, f"DML net{k}") and seq != sim
        assert cell(paper, "update_order", "sequential (Algorithm 1)", f"DML net{k}").metric == dml.net_metric(k)
    seq_cfg, sim_cfg = (resolve(cell(paper, "update_order", row, "DML net1").specs[0])
                        for row in ("sequential (Algorithm 1)", "simultaneous (one forward pass)"))
    assert seq_cfg["method_args"]["update_order"] == "sequential"
    assert {k: v for k, v in sim_cfg.items() if k not in ("method_args", "run_id")} == \
        {k: v for k, v in seq_cfg.items() if k not in ("method_args", "run_id")}
    assert sim_cfg["method_args"] == dict(seq_cfg["method_args"], update_order="simultaneous")
    refs = load_references("dml")
    assert refs[("update_order", "sequential (Algorithm 1)", "DML net1")]["value"] == 71.19


def test_market_networks_start_from_imagenet_weights_only_when_all_are_present(tmp_path, monkeypatch):
    from kd_methods.runs.spec import Pretrained

    monkeypatch.chdir(tmp_path)   # the weights paths are relative: data/pretrained/...
    assert dml.market("InceptionV1").init is None  # nothing on disk: from scratch, and the notes say so
    assert "Trained from scratch" in dml.market_init_note() and "MobileNet (none recorded)" in dml.market_init_note()
    mobilenet = Pretrained("mobilenetv1_100", "data/pretrained/mobilenet.pth", "ab" * 4)
    monkeypatch.setitem(dml.IMAGENET_WEIGHTS, "MobileNet", mobilenet)
    (tmp_path / "data" / "pretrained").mkdir(parents=True)
    (tmp_path / mobilenet.path).touch()
    assert dml.market("MobileNet").init is None   # InceptionV1's file is still missing: all from scratch
    (tmp_path / dml.IMAGENET_WEIGHTS["InceptionV1"].path).touch()
    assert dml.market("MobileNet").init == mobilenet
    cohort = dml.mutual("MobileNet", ["MobileNet"], "market1501")
    assert cohort.init == mobilenet and "ImageNet weights" in dml.market_init_note()
    inception = dml.independent("InceptionV1", "market1501").init
    assert inception.sha256 == "0cc3c7bd" and inception.ignore == ["AuxLogits."]
    assert dml.independent("ResNet-32").init is None  # CIFAR-100 runs train from scratch, as the paper's


def test_paper_notes_state_the_assumptions(paper):
    notes = " ".join(paper.protocol_notes)
    assert "assumed (CIFAR-100): weight decay 5e-4" in notes
    assert "inception_v3" in notes and "from scratch" in notes
    assert any("2.20" in n for n in table(paper, "table2").notes)


def _row(t, c, run_id, budget, top1_err, extra):
    return dict(run_id=run_id, paper="dml", table=t.key, label=cell_label(c), dataset="synthetic100", budget=budget,
                status="finished", top1_err=str(top1_err), extra=json.dumps(extra))


def test_plots_draw_from_runs_and_without_runs(paper, tmp_path):
    rows = []
    for t in paper.tables:
        for c in t.cells:
            k = int(c.row.split("=")[1]) if c.row.startswith("K=") else 2
            extra = {f"net{i}_top1_err": 60.0 + i for i in range(1, k + 1)}
            rows.append(_row(t, c, f"{t.key}-{c.row}", "smoke", 61.0 if "DML" in c.col or "net" in c.col else 65.0,
                             extra))
    for plot in paper.plots:
        for name, given in (("empty", []), ("full", rows)):
            path = tmp_path / f"{plot.key}_{name}.png"
            plot.draw(paper=paper, rows=given, budget="smoke" if given else None, curves={}, path=path)
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_reproduce_entropy_table_end_to_end(tmp_path):
    from kd_methods.runs.runner import RunContext
    from kd_methods.runs.store import RunStore

    ctx = RunContext(store=RunStore(tmp_path / "runs"), results_dir=tmp_path / "results", log=lambda *a: None)
    reproduce("dml", budget="smoke", ctx=ctx, tables=["entropy"])
    out = tmp_path / "results" / "dml"
    with open(out / "runs.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["table"] == "entropy"]
    assert {r["label"] for r in rows} == {"ResNet-32 | Independent", "ResNet-32 | DML"}
    assert all(r["status"] == "finished" and r["dataset"] == "synthetic100_16px" for r in rows)
    dml_row = next(r for r in rows if r["method"] == "dml")
    assert {"entropy", "net2_entropy", "net2_top1_err"} <= set(json.loads(dml_row["extra"]))
    text = (out / "entropy.md").read_text()
    (line,) = [line for line in text.splitlines() if line.startswith("| **ResNet-32** |")]
    independent, dml = (next(r for r in rows if r["label"] == f"ResNet-32 | {c}") for c in ("Independent", "DML"))
    for r, paper_value in ((independent, "0.26"), (dml, "1.71")):  # ours (n=1) beside the paper's value
        ours = json.loads(r["extra"])["entropy"]
        assert f"**{ours:.2f}** ± 0.00 (n=1)<br>paper: {paper_value}" in line
    for png in ("cohort", "dml_vs_dmle", "table2_gains"):
        assert (out / f"{png}.png").stat().st_size > 0


def test_market_protocol_builds_adam_with_the_papers_betas(paper):
    import torch

    from kd_methods.engine.optim import build_optimizer

    cfg = resolve(cell(paper, "table4_market1501", "Net1=MobileNet, Net2=MobileNet", "DML net1").specs[0])
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(2))], cfg["train"]["optim"])
    assert isinstance(opt, torch.optim.Adam)
    group = opt.param_groups[0]
    assert (group["lr"], group["betas"], group["eps"], group["weight_decay"]) == (2e-4, (0.5, 0.999), 1e-8, 4e-5)
