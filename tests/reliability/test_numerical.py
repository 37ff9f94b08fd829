"""A NaN or inf loss through `kd-bench run`: the run stops with one clear line and exit code 3 (distinct
from bad input's 2), its last good checkpoint is kept and loads, and the failure is recorded in the
manifest and in runs.csv; running the same command again fails the same way without duplicating rows."""
import json

import pytest
import torch

from kd_methods.cli import main
from kd_methods.engine.checkpoint import load_checkpoint
from kd_methods.engine.trainer import _first_nonfinite

from .common import read_csv, run_folders

# Epoch 1 trains at lr 0.05; the milestone then multiplies the lr by 1e30 and epoch 2 diverges.
DIVERGES_IN_EPOCH_2 = """
paper: rel
table: nan
model: cifar_resnet8
dataset: synthetic10
batch_size: 32
train_subset: 64
test_subset: 32
train: {length: 3, unit: epoch, optim: {lr: 0.05, schedule: multistep, milestones: [1], gamma: 1e30}}
"""


def cli() -> int:
    return main(["run", "c.yaml", "--device", "cpu", "--no-progress"])


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = err.strip().splitlines()
    return line


@pytest.mark.slow
def test_nan_stops_the_run_keeps_the_good_checkpoint_and_records_the_failure(workdir, capsys):
    (workdir / "c.yaml").write_text(DIVERGES_IN_EPOCH_2)
    assert cli() == 3
    line = one_line(capsys)
    assert line.startswith("kd-bench: training diverged: loss_ce became nan in stage 'train' epoch 2")
    assert "the checkpoint of epoch 1 is kept; lower the learning rate" in line

    (run_dir,) = run_folders(workdir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "epoch 2" in manifest["failure"]
    assert not (run_dir / "result.json").exists() and not (run_dir / "model.pt").exists()
    ckpt = load_checkpoint(run_dir / "last.pt")  # weights_only: loads, and is the good epoch 1
    assert [r["epoch"] for r in ckpt["history"]] == [1] and (ckpt["stage_index"], ckpt["stage_epoch"]) == (0, 1)
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert [int(r["epoch"]) for r in read_csv(run_dir / "metrics.csv")] == [1]
    (row,) = read_csv(workdir / "results" / "rel" / "runs.csv")
    assert row["status"] == "failed" and row["run_id"] == run_dir.name

    good = (run_dir / "last.pt").read_bytes()
    assert cli() == 3  # same command: resumes from epoch 1, diverges again, records it once
    assert "epoch 2" in one_line(capsys)
    assert (run_dir / "last.pt").read_bytes() == good
    assert len(read_csv(workdir / "results" / "rel" / "runs.csv")) == 1
    assert json.loads((run_dir / "manifest.json").read_text())["resumed"] == 1


def test_nan_in_the_first_epoch_says_there_is_no_checkpoint(workdir, capsys):
    (workdir / "c.yaml").write_text(DIVERGES_IN_EPOCH_2.replace("lr: 0.05", "lr: 1e30"))
    assert cli() == 3
    line = one_line(capsys)
    assert "epoch 1; no epoch had finished, so there is no checkpoint" in line
    (run_dir,) = run_folders(workdir)
    assert not (run_dir / "last.pt").exists()
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "failed"


@pytest.mark.parametrize("bad", [float("inf"), -float("inf"), float("nan")])
def test_non_finite_weights_are_found_by_name(bad):
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    assert _first_nonfinite(net) is None
    with torch.no_grad():
        net[1].running_var[1] = bad
    assert _first_nonfinite(net) == "1.running_var"
    with torch.no_grad():
        net[0].weight[0, 1] = bad
    assert _first_nonfinite(net) == "0.weight"
