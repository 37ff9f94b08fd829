"""The foundation's acceptance test: SIGKILL during epoch 2 of 3, same command again, same final metrics."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

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

    subprocess.run(command(tmp_path, "killed"), check=True, env=env, capture_output=True, timeout=600)
    full, resumed = result(tmp_path, "full"), result(tmp_path, "killed")
    for key in ("top1_err", "top5_err", "best_top1_err", "epochs"):
        assert resumed[key] == full[key], key
    assert history(tmp_path, "killed") == history(tmp_path, "full")
