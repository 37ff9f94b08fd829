"""The foundation's acceptance test: SIGKILL during epoch 2 of 3, same command again, same final metrics;
the rerun provably resumed (it found the checkpoint of epoch 1 and said so), it did not start over."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kd_methods.engine.checkpoint import load_checkpoint

CONFIG = """
model: cifar_resnet8
method: scratch
dataset: synthetic10
batch_size: 32
train_subset: 1024
test_subset: 128
seed: 3
train: {length: 3, unit: epoch, optim: {lr: 0.05, milestones: [2]}}
"""


def command(tmp: Path, runs: str) -> list[str]:
    return [sys.executable, "-m", "kd_methods.cli", "run", str(tmp / "c.yaml"), "--device", "cpu",
            "--runs-dir", str(tmp / runs), "--results-dir", str(tmp / f"results-{runs}"), "--no-progress"]


def result(tmp: Path, runs: str) -> dict:
    (run,) = (tmp / runs).glob("*/result.json")
    return json.loads(run.read_text())


def history(tmp: Path, runs: str) -> list[str]:
    (metrics,) = (tmp / runs).glob("*/metrics.csv")
    rows = metrics.read_text().splitlines()
    header = rows[0].split(",")
    wall = header.index("wall_s")
    return [",".join(v for i, v in enumerate(r.split(",")) if i != wall) for r in rows]


@pytest.mark.slow
def test_sigkill_in_epoch_two_then_rerun_matches_uninterrupted(tmp_path):
    (tmp_path / "c.yaml").write_text(CONFIG)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run(command(tmp_path, "full"), check=True, env=env, capture_output=True, timeout=600)

    proc = subprocess.Popen(command(tmp_path, "killed"), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list((tmp_path / "killed").glob("*/metrics.csv")):
        time.sleep(0.01)
    time.sleep(0.2)  # into epoch 2
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not list((tmp_path / "killed").glob("*/result.json")), "killed too late: the run had finished"
    (run_dir,) = [m.parent for m in (tmp_path / "killed").glob("*/metrics.csv")]
    found = load_checkpoint(run_dir / "last.pt")  # what the rerun will start from: epoch 1 (or 2), not 0
    assert found is not None and 1 <= len(found["history"]) < 3

    rerun = subprocess.run(command(tmp_path, "killed"), check=True, env=env, capture_output=True, text=True,
                           timeout=600)
    assert f"[resume] {run_dir.name}" in rerun.stdout
    assert json.loads((run_dir / "manifest.json").read_text())["resumed"] == 1
    with open(run_dir / "metrics.csv", newline="") as f:  # the killed process's epochs are kept as they were
        kept = list(csv.DictReader(f))[:len(found["history"])]  # (wall_s included), not trained again
    assert kept == [{k: str(v) for k, v in row.items()} for row in found["history"]]
    full, resumed = result(tmp_path, "full"), result(tmp_path, "killed")
    for key in ("top1_err", "top5_err", "best_top1_err", "epochs"):
        assert resumed[key] == full[key], key
    assert history(tmp_path, "killed") == history(tmp_path, "full")
