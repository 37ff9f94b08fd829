"""Iteration-based schedules in the training loop (FSP, TSD and DML on Market-1501 count iterations): the
learning rate every optimiser step actually used, the stage that ends at its last iteration in the middle
of an epoch, and a resume from a checkpoint taken between milestones or stages."""
from __future__ import annotations

import csv

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from kd_methods.engine import trainer
from kd_methods.engine.trainer import EngineOptions
from kd_methods.models import create_model
from kd_methods.runs.spec import ExperimentSpec, Optim, Phase, resolve

CPU = EngineOptions(device="cpu", progress=False)


def iters(length: int, lr: float, milestones: list[int]) -> Phase:
    return Phase(length=length, unit="iter", optim=Optim(lr=lr, milestones=milestones, gamma=0.1))


def config(**kw) -> dict:
    """4 steps per epoch: 128 images in batches of 32 (test_engine's shapes, whose kernels are built)."""
    return resolve(ExperimentSpec(**dict(dict(model="cifar_resnet8", dataset="synthetic10", batch_size=32,
                                              train_subset=128, test_subset=64, seed=5), **kw)))


class StepLog:
    """Every optimiser step while active: (the optimiser, the learning rate it stepped with)."""

    def __enter__(self):
        self.steps = []
        self.handle = register_optimizer_step_pre_hook(
            lambda opt, args, kwargs: self.steps.append((opt, opt.param_groups[0]["lr"])))
        return self

    def __exit__(self, *exc):
        self.handle.remove()

    def per_stage(self) -> list[list[float]]:
        """The step learning rates grouped by optimiser (the engine builds one per stage)."""
        order = list(dict.fromkeys(opt for opt, _ in self.steps))
        return [[lr for opt, lr in self.steps if opt is o] for o in order]


def train(cfg, run_dir, teachers=()):
    """train_run and the learning rate of each step; the result is None when training was stopped (see
    the `stopped_after_epochs` fixture)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with StepLog() as log:
        try:
            out = trainer.train_run(cfg, run_dir, list(teachers), CPU)
        except KeyboardInterrupt:
            out = None
    return out, log


def rows(run_dir) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k != "wall_s"} for r in csv.DictReader(f)]


def test_learning_rate_of_every_step_follows_milestones_in_iterations(tmp_path):
    """10 iterations, milestones 3 and 6: steps 0-2 at 0.1, 3-5 at 0.01, 6-9 at 0.001; the run stops
    after its 10th step, two steps into its third epoch."""
    cfg = config(train=iters(10, 0.1, [3, 6]))
    _, log = train(cfg, tmp_path)
    (lrs,) = log.per_stage()
    assert lrs == pytest.approx([0.1] * 3 + [0.01] * 3 + [0.001] * 4)
    history = rows(tmp_path)
    assert [int(r["stage_iteration"]) for r in history] == [4, 8, 10]
    assert [float(r["lr"]) for r in history] == pytest.approx([0.01, 0.001, 0.001])  # each epoch's last step


def two_stages() -> dict:
    """FSP: stage 1 ends at its 6th iteration, mid-way through its second epoch; stage 2 then runs 5."""
    return config(model="cifar_resnet8", method="fsp",
                  teachers=[ExperimentSpec(model="cifar_resnet8", dataset="synthetic10")],
                  stages={"fsp": iters(6, 1e-4, [5]), "train": iters(5, 0.1, [2])})


def fsp_teacher():
    torch.manual_seed(0)
    return create_model("cifar_resnet8", num_classes=10)


def test_a_stage_ends_at_its_last_iteration_mid_epoch_and_the_next_starts_its_own_schedule(tmp_path):
    _, log = train(two_stages(), tmp_path, [fsp_teacher()])
    fsp, ce = log.per_stage()
    assert fsp == pytest.approx([1e-4] * 5 + [1e-5])
    assert ce == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.01])
    history = rows(tmp_path)
    assert [(r["stage"], int(r["stage_epoch"]), int(r["stage_iteration"])) for r in history] == [
        ("fsp", 1, 4), ("fsp", 2, 6), ("train", 1, 4), ("train", 2, 5)]
    assert [int(r["epoch"]) for r in history] == [1, 2, 3, 4]


def test_a_resume_between_milestones_or_stages_equals_the_uninterrupted_run(tmp_path, stopped_after_epochs):
    """Killed after epoch 2 (stage 1 over, mid-epoch) or epoch 3 (inside stage 2, past its lr drop): the
    rerun trains only the missing steps, each at the learning rate the uninterrupted run used, and ends
    with its weights and metrics."""
    cfg = two_stages()
    full, full_log = train(cfg, tmp_path / "full", [fsp_teacher()])
    full_steps = [lr for _, lr in full_log.steps]
    done_after = {2: 6, 3: 10}  # optimiser steps taken when the checkpoint of epoch k was written
    for k, done in done_after.items():
        run_dir = tmp_path / f"killed{k}"
        with stopped_after_epochs(k):
            killed, _ = train(cfg, run_dir, [fsp_teacher()])
        assert killed is None and len(torch.load(run_dir / "last.pt", weights_only=True)["history"]) == k
        resumed, log = train(cfg, run_dir, [fsp_teacher()])
        assert [lr for _, lr in log.steps] == pytest.approx(full_steps[done:]), f"killed after epoch {k}"
        assert rows(run_dir) == rows(tmp_path / "full")
        a, b = full["models"]["student"], resumed["models"]["student"]
        assert all(torch.equal(a[key], b[key]) for key in a), f"killed after epoch {k}"
