"""`make ddp-smoke`: the same KD run on 2 gloo processes (torchrun) and on 1 process must agree.

Both runs use the same config, hence the same global batch (the spec's batch_size is global; each of
the N ranks takes batch_size / N images of every step). They cannot agree bit for bit on CPU: batch
norm statistics are per rank (SyncBatchNorm needs a GPU), and gradient all-reduce sums in another
order. The check therefore compares the final training loss and test error within the tolerances
below, and that only rank 0 wrote the results row.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

LOSS_RTOL = 0.05      # relative difference of the last epoch's mean training loss
ERR_ATOL = 5.0        # absolute difference of the final top-1 error, in points (256 test images)

CONFIG = textwrap.dedent("""
    paper: ddp
    table: smoke
    label: kd resnet14 -> resnet8
    model: cifar_resnet8
    method: kd
    teachers:
      - {model: cifar_resnet14, dataset: synthetic10, batch_size: 32, train_subset: 512, test_subset: 256,
         train: {length: 1, unit: epoch, optim: {lr: 0.05, schedule: constant}}}
    dataset: synthetic10
    batch_size: 32
    train_subset: 512
    test_subset: 256
    train: {length: 2, unit: epoch, optim: {lr: 0.05, milestones: [1]}}
""")


def _run(cmd: list[str], env: dict) -> None:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"ddp-smoke: command failed ({proc.returncode}): {' '.join(cmd)}")


def _final(runs: Path, results: Path) -> tuple[dict, dict, list[str]]:
    from .runs.store import read_results
    rows = read_results(results / "ddp" / "runs.csv")
    student = [r for r in rows if r["paper"] == "ddp"]
    (row,) = student
    result = json.loads((runs / row["run_id"] / "result.json").read_text())
    with open(runs / row["run_id"] / "metrics.csv") as f:
        import csv
        last = list(csv.DictReader(f))[-1]
    return result, last, [r["run_id"] for r in rows]


def main(workdir: str | None = None) -> int:
    tmp = Path(workdir or tempfile.mkdtemp(prefix="kd-ddp-"))
    (tmp / "c.yaml").write_text(CONFIG)
    env = dict(os.environ, OMP_NUM_THREADS="1", CI=os.environ.get("CI", "true"))
    cli = ["-m", "kd_methods.cli", "run", str(tmp / "c.yaml"), "--device", "cpu", "--no-progress"]
    single = [sys.executable, *cli, "--runs-dir", str(tmp / "runs1"), "--results-dir", str(tmp / "res1")]
    multi = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *cli,
             "--runs-dir", str(tmp / "runs2"), "--results-dir", str(tmp / "res2")]
    _run(single, env)
    _run(multi, env)
    r1, m1, rows1 = _final(tmp / "runs1", tmp / "res1")
    r2, m2, rows2 = _final(tmp / "runs2", tmp / "res2")
    loss1, loss2 = float(m1["loss"]), float(m2["loss"])
    rel = abs(loss1 - loss2) / max(abs(loss1), 1e-8)
    err = abs(r1["top1_err"] - r2["top1_err"])
    print(f"1 process : loss {loss1:.4f}  top-1 error {r1['top1_err']:.2f}%")
    print(f"2 processes: loss {loss2:.4f}  top-1 error {r2['top1_err']:.2f}%")
    print(f"difference: loss {rel:.2%} (tolerance {LOSS_RTOL:.0%}), top-1 {err:.2f} points (tolerance {ERR_ATOL})")
    ok = rel <= LOSS_RTOL and err <= ERR_ATOL and len(rows2) == len(set(rows2)) == 1
    print("ddp-smoke: " + ("OK" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))
