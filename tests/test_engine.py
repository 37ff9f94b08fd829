"""The one training loop: stages, metrics, checkpoints, resume == uninterrupted, NaN handling, reuse."""
import csv
import dataclasses
import json
import tempfile
from pathlib import Path

import pytest
import torch

from kd_methods.engine.trainer import EngineOptions
from kd_methods.errors import ConfigError, NumericalFault
from kd_methods.runs.runner import RunContext, execute, load_run_model
from kd_methods.runs.spec import SKIPPED, ExperimentSpec, Optim, Phase, Pretrained, from_dict, resolve, upstream
from kd_methods.runs.store import RunStore, read_results

CPU = EngineOptions(device="cpu", progress=False)


def tiny(model="cifar_resnet8", method="scratch", epochs=2, **kw):
    base = dict(model=model, method=method, dataset="synthetic10", batch_size=32, train_subset=128,
                test_subset=64, train=Phase(length=epochs, optim=Optim(lr=0.05, milestones=[1])),
                paper="unit", table="t", label=method)
    base.update(kw)
    return ExperimentSpec(**base)


def ctx_for(tmp_path):
    return RunContext(store=RunStore(tmp_path / "runs"), results_dir=tmp_path / "results", opts=CPU,
                      log=lambda m: None)


def read_metrics(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_a_run_writes_config_manifest_metrics_checkpoint_and_results_row(tmp_path):
    cfg = resolve(tiny())
    result = execute(cfg, ctx_for(tmp_path))
    d = tmp_path / "runs" / cfg["run_id"]
    for name in ("config.json", "manifest.json", "metrics.csv", "model.pt", "result.json"):
        assert (d / name).is_file(), name
    assert not (d / "last.pt").exists()  # a finished run keeps no training checkpoint
    rows = read_metrics(d / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[0]["lr"]) == pytest.approx(0.05) and float(rows[1]["lr"]) == pytest.approx(0.005)
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["versions"]["torch"] == torch.__version__
    assert result["top1_err"] == float(rows[-1]["top1_err"])
    assert result["best_top1_err"] == min(float(r["top1_err"]) for r in rows)
    (row,) = read_results(tmp_path / "results" / "unit" / "runs.csv")
    assert row["run_id"] == cfg["run_id"] and row["status"] == "finished" and row["epochs"] == "2"


def test_a_finished_run_is_reused_not_retrained(tmp_path):
    cfg = resolve(tiny())
    ctx = ctx_for(tmp_path)
    execute(cfg, ctx)
    stamp = (tmp_path / "runs" / cfg["run_id"] / "model.pt").stat().st_mtime_ns
    logged = []
    ctx.log = logged.append
    execute(cfg, ctx)
    assert logged == [] and (tmp_path / "runs" / cfg["run_id"] / "model.pt").stat().st_mtime_ns == stamp


def _without_wall(history):
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in history]


@pytest.mark.parametrize("spec", [
    tiny(epochs=3),
    # DML's sequential order: one optimiser, two updates a step, the peer's batch norm counting once
    tiny(epochs=2, method="dml", method_args={"peers": ["cifar_resnet8"], "update_order": "sequential"},
         batch_size=8, train_subset=16, test_subset=16)], ids=["scratch", "dml-sequential"])
def test_resume_from_an_epoch_checkpoint_equals_an_uninterrupted_run(tmp_path, stopped_after_epochs, spec):
    cfg = resolve(spec)
    full_ctx = ctx_for(tmp_path / "a")
    full = execute(cfg, full_ctx)

    # Die right after epoch 1's checkpoint is on disk, as a kill between epochs would.
    ctx = ctx_for(tmp_path / "b")
    with stopped_after_epochs(1), pytest.raises(KeyboardInterrupt):
        execute(cfg, ctx)
    assert not ctx.store.is_finished(cfg["run_id"])
    resumed = execute(cfg, ctx)

    def history(c):
        return _without_wall(read_metrics(c.store.dir(cfg["run_id"]) / "metrics.csv"))

    assert history(ctx) == history(full_ctx)
    assert (resumed["top1_err"], resumed["top5_err"]) == (full["top1_err"], full["top5_err"])
    a = torch.load(full_ctx.store.dir(cfg["run_id"]) / "model.pt", weights_only=True)["models"]
    b = torch.load(ctx.store.dir(cfg["run_id"]) / "model.pt", weights_only=True)["models"]
    assert a.keys() == b.keys() and all(torch.equal(a[m][k], b[m][k]) for m in a for k in a[m])
    manifest = json.loads((ctx.store.dir(cfg["run_id"]) / "manifest.json").read_text())
    assert manifest["resumed"] == 1


def test_teacher_runs_first_and_is_loaded_frozen(tmp_path):
    teacher = tiny(model="cifar_resnet14", label="teacher", paper="")
    student = resolve(tiny(method="kd", teachers=[teacher]))
    ctx = ctx_for(tmp_path)
    execute(student, ctx)
    tid = student["teachers"][0]["run_id"]
    assert ctx.store.is_finished(tid)
    model = load_run_model(student["teachers"][0], ctx.store)
    assert not model.training
    saved = torch.load(tmp_path / "runs" / tid / "model.pt", weights_only=True)["models"]
    first = next(iter(saved.values()))
    assert all(torch.equal(v, first[k]) for k, v in model.state_dict().items())


def test_unknown_stage_override_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="has no stage 'hint'"):
        execute(resolve(tiny(stages={"hint": Phase(length=1)})), ctx_for(tmp_path))
    assert not (tmp_path / "runs").exists()


def test_nan_loss_stops_the_run_keeps_the_checkpoint_and_records_failure(tmp_path):
    cfg = resolve(tiny(epochs=3, train=Phase(length=3, optim=Optim(lr=1e30, momentum=0.0, weight_decay=0.0,
                                                                   schedule="constant"))))
    ctx = ctx_for(tmp_path)
    with pytest.raises(NumericalFault, match="lower the learning rate"):
        execute(cfg, ctx)
    d = tmp_path / "runs" / cfg["run_id"]
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "loss" in manifest["failure"]
    assert not (d / "result.json").exists()
    (row,) = read_results(tmp_path / "results" / "unit" / "runs.csv")
    assert row["status"] == "failed"


@pytest.mark.parametrize("budget", ["smoke", "paper"])
def test_smoke_runs_keep_the_average_of_their_batches_as_batchnorm_statistics(tmp_path, monkeypatch, budget):
    """Two steps would leave BN's running mean 81% at its start under the usual momentum 0.1; the smoke
    budget averages the batches instead, so an eval-mode teacher sees sensible statistics."""
    from kd_methods.engine import trainer
    from kd_methods.models import create_model

    seen = []

    def create_and_watch(name, **kw):
        model = create_model(name, **kw)
        model.bn1.register_forward_hook(
            lambda m, inp, out: seen.append(inp[0].detach().mean(dim=(0, 2, 3))) if m.training else None)
        return model

    monkeypatch.setattr(trainer, "create_model", create_and_watch)
    cfg = resolve(tiny(epochs=1), budget=budget, data="synthetic")
    assert cfg.get("bn_stats") == ("cumulative" if budget == "smoke" else None)
    result = trainer.train_run(cfg, tmp_path, [], EngineOptions(device="cpu", progress=False, amp=False))
    running = result["models"]["student"]["bn1.running_mean"]
    batches = torch.stack(seen)
    if budget == "smoke":
        assert len(seen) == 2 and torch.allclose(running, batches.mean(0), atol=1e-5)
    else:  # exponential moving average from 0 with momentum 0.1
        expected = torch.zeros_like(running)
        for b in batches:
            expected = 0.9 * expected + 0.1 * b
        assert torch.allclose(running, expected, atol=1e-5)


def test_a_run_can_start_from_another_runs_student_and_skip_a_stage(tmp_path):
    """FSP's branching: a run trains only stage 1 (stage 2 skipped, length 0); another run skips stage 1
    and starts its student from that run's (the init run trains first, as a teacher would)."""
    small = dict(batch_size=16, train_subset=16, test_subset=16)
    teacher = tiny(model="cifar_resnet14", label="teacher", paper="", epochs=1, **small)
    frozen = Phase(length=1, unit="iter", optim=Optim(lr=1e-12, momentum=0.0, weight_decay=0.0,
                                                       schedule="constant"))
    stage1 = tiny(method="fsp", teachers=[teacher], label="stage 1", paper="", **small,
                  stages={"fsp": Phase(length=2, unit="iter", optim=Optim(lr=1e-3)), "train": SKIPPED})
    member = dataclasses.replace(stage1, init=stage1, label="member", paper="unit", seed=3,
                                 stages={"fsp": SKIPPED, "train": frozen})
    cfg = resolve(member)
    assert cfg["init"]["run_id"] == resolve(stage1)["run_id"] and cfg["run_id"] != cfg["init"]["run_id"]
    assert [c["run_id"] for c in upstream(cfg)] == [cfg["teachers"][0]["run_id"], cfg["init"]["run_id"]]
    assert resolve(member, "smoke")["stages"]["fsp"]["length"] == 0  # a skipped stage stays skipped
    ctx = ctx_for(tmp_path)
    execute(cfg, ctx)
    stages = {rid: {r["stage"] for r in read_metrics(ctx.store.dir(rid) / "metrics.csv")}
              for rid in (cfg["init"]["run_id"], cfg["run_id"])}
    assert stages == {cfg["init"]["run_id"]: {"fsp"}, cfg["run_id"]: {"train"}}
    # one step at lr 1e-12 leaves the weights where they started: the stage-1 run's trained student
    start = load_run_model(cfg["init"], ctx.store).state_dict()
    end = load_run_model(cfg, ctx.store).state_dict()
    convs = [k for k in start if k.endswith("conv1.weight")]
    assert convs and all(torch.allclose(start[k], end[k], atol=1e-9) for k in convs)


def test_init_runs_and_skipped_stages_are_validated():
    base = dict(model="cifar_resnet8", dataset="synthetic10")
    spec = from_dict(ExperimentSpec, dict(base, init=dict(model="cifar_resnet8", dataset="synthetic10", seed=4)))
    assert isinstance(spec.init, ExperimentSpec) and spec.init.seed == 4
    assert isinstance(from_dict(ExperimentSpec, dict(base, init=dict(model="cifar_resnet8", path="w.pt",
                                                                      sha256="ab" * 32))).init, Pretrained)
    with pytest.raises(ConfigError, match="init.model is 'cifar_resnet14'"):
        resolve(ExperimentSpec(**base, init=ExperimentSpec(model="cifar_resnet14", dataset="synthetic10")))
    with pytest.raises(ConfigError, match=r"train.length must be > 0"):
        resolve(ExperimentSpec(**base, train=Phase(length=0)))
    with pytest.raises(ConfigError, match="every stage of method 'scratch' has length 0"):
        execute(resolve(tiny(stages={"train": SKIPPED})), ctx_for(Path(tempfile.mkdtemp())))


def test_a_weights_file_starts_every_network_of_its_architecture_in_a_cohort(tmp_path):
    """DML from ImageNet-style weights: network 1 and its same-architecture peer both start from the file."""
    import hashlib

    from kd_methods.models import create_model

    torch.manual_seed(7)
    source = create_model("cifar_resnet8", num_classes=10)
    torch.save(source.state_dict(), tmp_path / "w.pt")
    sha = hashlib.sha256((tmp_path / "w.pt").read_bytes()).hexdigest()
    frozen = Phase(length=1, unit="iter", optim=Optim(lr=1e-12, momentum=0.0, weight_decay=0.0, schedule="constant"))
    spec = tiny(method="dml", method_args={"peers": ["cifar_resnet8"]}, batch_size=8, train_subset=8,
                test_subset=8, train=frozen, init=Pretrained("cifar_resnet8", str(tmp_path / "w.pt"), sha, 10))
    cfg = resolve(spec)
    ctx = ctx_for(tmp_path)
    execute(cfg, ctx)
    saved = torch.load(ctx.store.dir(cfg["run_id"]) / "model.pt", weights_only=True)["models"]
    for net in ("net1", "net2"):
        assert torch.allclose(saved[net]["conv1.weight"], source.conv1.weight, atol=1e-9), net


@pytest.mark.parametrize("order", ["sequential", "simultaneous"])
def test_a_dml_network_without_its_mimicry_term_trains_exactly_as_it_does_alone(tmp_path, monkeypatch, order):
    """Everything DML adds to network 1's training is its mimicry term: with the term zeroed, network 1
    of a pair follows the scratch run step for step (same init, batches, schedule, momentum, weight decay
    and batch-norm statistics) in either update order. Catches an engine that steps a network twice a
    batch, decays or moves a network outside its own update, or counts a batch twice in its statistics
    (the checks behind the real-data DML finding in benchmarks/claims.py)."""
    from kd_methods.engine import trainer
    from kd_methods.methods.dml import DML

    monkeypatch.setattr(DML, "mimicry", lambda self, logits, others: logits.sum() * 0.0)
    opts = EngineOptions(device="cpu", progress=False, amp=False)
    optim = Optim(lr=0.05, momentum=0.9, weight_decay=5e-4, milestones=[1])
    (tmp_path / "alone").mkdir(), (tmp_path / "pair").mkdir()
    alone = trainer.train_run(resolve(tiny(train=Phase(length=2, optim=optim))), tmp_path / "alone", [], opts)
    pair = trainer.train_run(resolve(tiny(method="dml", train=Phase(length=2, optim=optim),
                                          method_args=dict(peers=["cifar_resnet8"], update_order=order))),
                             tmp_path / "pair", [], opts)
    want, got = alone["models"]["student"], pair["models"]["net1"]
    assert want.keys() == got.keys()
    for name in want:
        assert torch.allclose(got[name].float(), want[name].float(), atol=1e-5), name
    # the peer did train: a pair whose second network stood still would pass the check above too
    assert not torch.allclose(pair["models"]["net2"]["conv1.weight"], got["conv1.weight"])


def test_uniform_init_starts_the_student_from_u_minus_a_a_and_enters_the_run_id_only_when_set(tmp_path, monkeypatch):
    """FitNets' MNIST protocol initialises every weight from U(-0.005, 0.005): `uniform_init: a` gives the
    student that start (every conv and linear weight within [-a, a], spread like a uniform's a/sqrt(3),
    biases 0), and leaves the ids of runs without it as they were."""
    from kd_methods.engine import trainer
    from kd_methods.models import create_model

    first = {}

    def keep_first_state(model, inputs):  # the weights as the first forward sees them: before any step
        if "state" not in first:
            first["state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def create_and_watch(name, **kw):
        model = create_model(name, **kw)
        model.register_forward_pre_hook(keep_first_state)
        return model

    monkeypatch.setattr(trainer, "create_model", create_and_watch)
    bound = 0.005
    spec = tiny("fitnet_mnist", dataset="synthetic_mnist", train=Phase(length=1, optim=Optim(lr=0.01)),
                uniform_init=bound)
    trainer.train_run(resolve(spec), tmp_path, [], EngineOptions(device="cpu", progress=False, amp=False))
    weights = [v for k, v in first["state"].items() if k.endswith("weight") and v.dim() > 1]
    biases = [v for k, v in first["state"].items() if k.endswith("bias")]
    assert weights and all(float(w.abs().max()) <= bound for w in weights)
    spread = torch.cat([w.flatten() for w in weights]).std()
    assert float(spread) == pytest.approx(bound / 3 ** 0.5, rel=0.05)
    assert all(not b.any() for b in biases)
    assert "uniform_init" not in resolve(tiny())
    assert resolve(spec)["run_id"] != resolve(dataclasses.replace(spec, uniform_init=None))["run_id"]
    with pytest.raises(ConfigError, match="uniform_init"):
        resolve(dataclasses.replace(spec, uniform_init=0.0))


def test_no_gradient_outlives_its_step_and_a_finished_stage_checkpoints_no_optimiser(tmp_path, monkeypatch,
                                                                                     stopped_after_epochs):
    """Gradients are freed right after the optimiser step (else they sit through the next forward pass
    and, after a stage ends, through every later stage), and the checkpoint written when a stage ends
    holds no optimiser state (the next stage builds its own), while resuming from it still equals the
    uninterrupted run."""
    from kd_methods.engine import checkpoint, trainer

    held = []
    original_step = trainer.train_step

    def step_and_look(steps, distiller, optimizer, *args, **kw):
        out = original_step(steps, distiller, optimizer, *args, **kw)
        held.append(sum(p.grad is not None for p in distiller.parameters()))
        return out

    saved = []
    original_save = checkpoint.save_atomic

    def save_and_look(state, path, **kw):
        saved.append((path.name, dict(state)))
        return original_save(state, path, **kw)

    monkeypatch.setattr(trainer, "train_step", step_and_look)
    monkeypatch.setattr(trainer, "save_atomic", save_and_look)
    teacher = tiny(epochs=1, train_subset=32, test_subset=16)
    spec = tiny(method="fitnets", teachers=[teacher], epochs=1, train_subset=32, test_subset=16,
                stages={"hint": Phase(length=2, optim=Optim(lr=0.05))})
    cfg = resolve(spec)
    full = execute(cfg, ctx_for(tmp_path / "a"))
    assert held and set(held) == {0}
    boundary = [s for name, s in saved if name == "last.pt" and s["stage_epoch"] == 0]
    within = [s for name, s in saved if name == "last.pt" and s["stage_epoch"] > 0]
    assert boundary and all("optimizer" not in s for s in boundary)
    assert within and all("optimizer" in s for s in within)  # mid-stage resumes need it

    # Killed right after the hint stage's last checkpoint (its two epochs), then resumed: the same weights.
    monkeypatch.setattr(trainer, "save_atomic", original_save)
    ctx = ctx_for(tmp_path / "b")
    with stopped_after_epochs(2), pytest.raises(KeyboardInterrupt):
        execute(cfg, ctx)
    resumed = execute(cfg, ctx)
    assert (resumed["top1_err"], resumed["top5_err"]) == (full["top1_err"], full["top5_err"])
    a = torch.load(ctx_for(tmp_path / "a").store.dir(cfg["run_id"]) / "model.pt", weights_only=True)["models"]
    b = torch.load(ctx.store.dir(cfg["run_id"]) / "model.pt", weights_only=True)["models"]
    assert all(torch.equal(a[m][k], b[m][k]) for m in a for k in a[m])


def test_the_sequential_executor_freezes_the_collector_only_while_it_runs(tmp_path):
    """Before its first run it freezes what lives (each run's collection then scans only that run's
    objects); when it returns, a caller that goes on has every object in the collector's sight again."""
    import gc

    from kd_methods.runs.executors import Sequential
    from kd_methods.runs.graph import RunGraph

    frozen_during = []
    ctx = ctx_for(tmp_path)
    ctx.log = lambda message: frozen_during.append(gc.get_freeze_count())
    graph = RunGraph(records=[resolve(tiny(epochs=1, train_subset=32, test_subset=16))])
    assert Sequential().run(graph, ctx) == []
    assert frozen_during and min(frozen_during) > 0 and gc.get_freeze_count() == 0
