"""Helpers shared by the reliability tests: `kd-bench` in child processes, and readers that check every
file a run leaves behind is complete.

Child processes come from a forkserver that has imported the package once, so a child starts in
milliseconds instead of re-importing torch, and SIGKILL hits a real, separate process. Each child runs
`kd_methods.cli.main` on one intra-op thread (results then do not depend on the machine's load) with
its stdout and stderr in a file.
"""
from __future__ import annotations

import csv
import json
import multiprocessing as mp
import os
import sys
from pathlib import Path

import torch

from kd_methods.engine.checkpoint import load_checkpoint

PRELOAD = ["torch", "kd_methods.cli", "kd_methods.runs.runner", "kd_methods.runs.preflight",
           "kd_methods.runs.spec", "kd_methods.data", "kd_methods.methods", "kd_methods.models"]


def context():
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def warm_up() -> None:
    """Start the forkserver (it imports PRELOAD once) so later children start at once."""
    proc = context().Process(target=os.getpid)
    proc.start()
    proc.join()


def _cli_child(argv: list[str], log: str, cwd: str) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    os.chdir(cwd)
    torch.set_num_threads(1)
    from kd_methods.cli import main
    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def start_cli(argv: list[str], log: Path, cwd: Path):
    """`kd-bench ARGV` in a new process (not waited for); its output is appended to `log`."""
    proc = context().Process(target=_cli_child, args=(list(argv), str(log), str(cwd)), daemon=True)
    proc.start()
    return proc


def run_cli(argv: list[str], log: Path, cwd: Path, timeout: float = 600) -> int:
    proc = start_cli(argv, log, cwd)
    proc.join(timeout)
    assert proc.exitcode is not None, f"kd-bench {' '.join(argv)} did not finish in {timeout} s"
    return proc.exitcode


def run_args(config: Path, root: Path) -> list[str]:
    return ["run", str(config), "--device", "cpu", "--no-progress", "--runs-dir", str(root / "runs"),
            "--results-dir", str(root / "results")]


# -- readers that fail on a half-written file ----------------------------------------------------------
def read_csv(path: Path) -> list[dict]:
    """Rows of a complete CSV: every row has exactly the header's fields."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = list(reader)
    assert all(len(r) == len(header) for r in rows), f"{path} has a truncated row"
    return [dict(zip(header, r)) for r in rows]


def check_run_folder(run_dir: Path) -> None:
    """Whatever a run folder holds is complete: JSON parses, CSV rows are whole, a checkpoint loads."""
    for name in ("config.json", "manifest.json", "result.json"):
        if (run_dir / name).exists():
            json.loads((run_dir / name).read_text())
    if (run_dir / "metrics.csv").exists():
        rows = read_csv(run_dir / "metrics.csv")
        assert [int(r["epoch"]) for r in rows] == list(range(1, len(rows) + 1))
    ckpt = load_checkpoint(run_dir / "last.pt")
    if (run_dir / "result.json").exists():
        assert (run_dir / "model.pt").is_file()  # last.pt is removed once result.json is written
        assert json.loads((run_dir / "manifest.json").read_text())["status"] == "finished"
    if ckpt is not None and (run_dir / "metrics.csv").exists():
        # metrics.csv is rewritten from the checkpoint after it: at most one epoch behind it; or one ahead
        # after the final epoch, whose weights went to model.pt (written before it) instead of a checkpoint
        ahead = len(read_csv(run_dir / "metrics.csv")) - len(ckpt["history"])
        assert ahead in (-1, 0) or (ahead == 1 and (run_dir / "model.pt").is_file())


def assert_epochs_kept(run_dir: Path, found: dict) -> None:
    """The epochs of checkpoint `found` (what a rerun started from) are in metrics.csv exactly as the killed
    process wrote them, wall_s included: the rerun resumed from them instead of training them again."""
    rows = read_csv(run_dir / "metrics.csv")[:len(found["history"])]
    assert [{k: r[k] for k in h} for r, h in zip(rows, found["history"])] == [
        {k: str(v) for k, v in h.items()} for h in found["history"]], "the rerun did not resume"


def without_wall(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]


def outcome(run_dir: Path) -> tuple[dict, list[dict]]:
    """(result.json without its timing fields, metrics.csv rows without wall_s)."""
    result = json.loads((run_dir / "result.json").read_text())
    for key in ("wall_s", "finished_at"):
        result.pop(key)
    return result, without_wall(read_csv(run_dir / "metrics.csv"))


def run_folders(root: Path) -> list[Path]:
    runs = root / "runs"
    return sorted(d for d in runs.iterdir() if d.is_dir() and d.name != ".locks") if runs.is_dir() else []
