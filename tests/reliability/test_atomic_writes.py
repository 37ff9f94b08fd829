"""SIGKILL a writer at random moments, many times: the checkpoint, metrics.csv and runs.csv it leaves are
always complete and consistent, and the next writer carries on from them (the engine's write order:
checkpoint, then metrics.csv rewritten from its history, then the results row)."""
import random
import time
from pathlib import Path

import pytest
import torch

from kd_methods.engine.checkpoint import load_checkpoint, remove_temporaries, save_atomic
from kd_methods.engine.metrics import MetricsLog
from kd_methods.runs.store import append_results_row

from .common import context, read_csv, warm_up

KILLS = 20            # at least this many kills ...
MID_WRITE = 5         # ... and until this many landed inside a write (a third of kills do on a quiet
MAX_KILLS = 300       # machine, far fewer on a busy one: counting them, not timing them, keeps it steady)
BLOB = (64, 4096)  # 1 MiB of float32 per checkpoint: a write takes long enough to be hit


def blob(step: int) -> torch.Tensor:
    return torch.arange(BLOB[0] * BLOB[1], dtype=torch.float32).reshape(BLOB) + step


def _writer(folder: str, ready) -> None:
    """Resume from the folder's checkpoint and write step after step until killed."""
    folder = Path(folder)
    remove_temporaries(folder)  # the one writer at a time cleans up after a killed one
    ckpt = load_checkpoint(folder / "last.pt")
    history = ckpt["history"] if ckpt else []
    if ckpt:  # the results row of the checkpointed step, in case the kill came before it (idempotent)
        append_results_row(folder, "rel", {"run_id": f"r{ckpt['step']}", "table": "t", "top1_err": ckpt["step"]})
    step = ckpt["step"] + 1 if ckpt else 0
    ready.set()
    while True:
        history.append({"epoch": step + 1, "top1_err": float(step)})
        save_atomic({"step": step, "blob": blob(step), "history": history}, folder / "last.pt")
        MetricsLog(folder / "metrics.csv", history).write()
        append_results_row(folder, "rel", {"run_id": f"r{step}", "table": "t", "top1_err": step})
        step += 1


def check(folder: Path) -> int:
    """Everything on disk is complete and consistent; returns the checkpointed step (-1: none yet)."""
    ckpt = load_checkpoint(folder / "last.pt")
    step = ckpt["step"] if ckpt else -1
    if ckpt:
        assert torch.equal(ckpt["blob"], blob(step)) and len(ckpt["history"]) == step + 1
    metrics = read_csv(folder / "metrics.csv") if (folder / "metrics.csv").exists() else []
    assert [int(r["epoch"]) for r in metrics] == list(range(1, len(metrics) + 1))
    assert step + 1 - len(metrics) in (0, 1)  # rewritten after the checkpoint: at most one step behind
    rows = read_csv(folder / "rel" / "runs.csv") if (folder / "rel" / "runs.csv").exists() else []
    ids = sorted(int(r["run_id"][1:]) for r in rows)  # a refreshed row moves to the end
    assert ids == list(range(len(ids))), ids  # no gap, no duplicate
    assert step - len(ids) in (-1, 0)  # the row follows its checkpoint
    return step


@pytest.mark.slow
def test_kills_during_checkpoint_metrics_and_results_writes_leave_valid_files(tmp_path):
    ctx = context()
    warm_up()
    rng = random.Random(11)
    steps, mid_write = [], 0
    while len(steps) < KILLS or (mid_write < MID_WRITE and len(steps) < MAX_KILLS):
        ready = ctx.Event()
        proc = ctx.Process(target=_writer, args=(str(tmp_path), ready), daemon=True)
        proc.start()
        assert ready.wait(60)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.kill()
        proc.join()
        steps.append(check(tmp_path))
        mid_write += bool(list(tmp_path.rglob(".*.tmp*")))
    assert steps == sorted(steps) and steps[-1] >= 0  # progress is never lost
    assert mid_write >= MID_WRITE  # kills did land inside a write (its temporary file was there)
    # What killed writers left half-written is cleaned up by the next writer of each file.
    remove_temporaries(tmp_path)
    append_results_row(tmp_path, "rel", {"run_id": "r0", "table": "t", "top1_err": 0})
    assert not list(tmp_path.rglob(".*.tmp*"))
    check(tmp_path)
