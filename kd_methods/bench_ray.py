"""`python -m kd_methods.bench_ray`: what the Ray executor costs a reproduction on this machine, and gains.

1. A smoke reproduction (default: DML, every table) in fresh folders, each as its own `kd-bench reproduce`
   process: sequential (in one process, torch's default threads, then one thread), then
   `--executor ray --cpus-per-run 1` on a local Ray instance started by the command (as many runs at a
   time as this machine has CPUs, one thread each). Wall time of each.
2. Ray's overhead per run, on warm workers: `runs` tasks of the executor's task function
   (`ray_executor.train_task`) on runs that are already finished, so each does everything but training
   (scheduling, shipping its config, the task wrapper, finding the finished run); per task, against the
   same call in process. And a fresh worker's first task, which imports torch and kd_methods.

Prints a markdown table and writes it to `<out>/ray.md` (default results/bench). Timings on a shared
machine move with its load, which the table states.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _reproduce(paper: str, root: Path, extra: list[str], threads: int | None = None) -> tuple[float, str]:
    """Wall seconds of one `kd-bench reproduce` process, and the load averages (1 min) before and after it."""
    argv = [sys.executable, "-m", "kd_methods.cli", "reproduce", paper, "--budget", "smoke", "--device", "cpu",
            "--no-progress", "--runs-dir", str(root / "runs"), "--results-dir", str(root / "results"), *extra]
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    (root / "log.txt").write_text(proc.stdout + proc.stderr)
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}); see {root / 'log.txt'}")
    return wall, f"load {load:.1f} -> {os.getloadavg()[0]:.1f}"


def _rows(root: Path, paper: str) -> list[dict]:
    """runs.csv rows without their timings."""
    from .runs.store import read_results
    return [{k: v for k, v in r.items() if k not in ("wall_s", "finished_at")}
            for r in read_results(root / "results" / paper / "runs.csv")]


def _overhead(runs_dir: Path, n: int) -> dict:
    """Seconds per finished-run task on warm Ray workers, in process, and a cold worker's first task."""
    import ray

    from .engine.trainer import EngineOptions
    from .runs.executors.ray_executor import train_task
    from .runs.runner import RunContext, train_one
    from .runs.store import RunStore, read_json

    cfgs = [read_json(d / "config.json") for d in sorted(runs_dir.iterdir()) if (d / "result.json").is_file()]
    setup = dict(cwd=os.getcwd(), runs_dir=str(runs_dir), results_dir=str(runs_dir.parent / "results"),
                 opts=EngineOptions(device="cpu"), threads=1)
    t0 = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="warning", log_to_driver=False)
    start = time.perf_counter() - t0
    task = ray.remote(train_task).options(num_cpus=1)
    t0 = time.perf_counter()
    ray.get([task.remote(cfgs[i % len(cfgs)], setup) for i in range(os.cpu_count())])  # fresh workers
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    ray.get([task.remote(cfgs[i % len(cfgs)], setup) for i in range(n)])
    warm = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for i in range(n):  # one at a time: the round trip of a task
        ray.get(task.remote(cfgs[i % len(cfgs)], setup))
    latency = (time.perf_counter() - t0) / n
    ray.shutdown()
    ctx = RunContext(store=RunStore(runs_dir), results_dir=runs_dir.parent / "results", log=lambda m: None)
    t0 = time.perf_counter()
    for i in range(n):
        train_one(cfgs[i % len(cfgs)], ctx)
    local = (time.perf_counter() - t0) / n
    return dict(start=start, cold=cold, warm=warm, latency=latency, local=local)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m kd_methods.bench_ray", description=__doc__.splitlines()[0])
    p.add_argument("--paper", default="dml")
    p.add_argument("--runs", type=int, default=200, help="tasks timed for the overhead per run")
    p.add_argument("--out", default="results/bench")
    args = p.parse_args(argv)
    from .runs.store import cpu_model

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        seq, seq_load = _reproduce(args.paper, tmp / "sequential", [])
        seq1, seq1_load = _reproduce(args.paper, tmp / "sequential1", [], threads=1)
        par, par_load = _reproduce(args.paper, tmp / "ray", ["--executor", "ray", "--cpus-per-run", "1"])
        n_runs = sum(1 for d in (tmp / "ray" / "runs").iterdir() if (d / "result.json").is_file())
        same = _rows(tmp / "sequential1", args.paper) == _rows(tmp / "ray", args.paper)
        over = _overhead(tmp / "ray" / "runs", args.runs)
    load_after = os.getloadavg()
    cpus = os.cpu_count()
    lines = [
        f"# The Ray executor on this machine ({cpu_model()}, {cpus} CPUs)", "",
        f"Generated by `python -m kd_methods.bench_ray --paper {args.paper}` (`kd_methods/bench_ray.py`). "
        f"Load average (1/5/15 min) before {'/'.join(f'{x:.2f}' for x in load_before)}, after "
        f"{'/'.join(f'{x:.2f}' for x in load_after)}: the machine is shared, and the wall times move with its load.",
        "", "| measurement | value |", "|---|---|",
        f"| `kd-bench reproduce {args.paper} --budget smoke`, sequential ({n_runs} runs, torch's default threads) "
        f"| {seq:.1f} s ({seq_load}) |",
        f"| the same, sequential on 1 thread (`OMP_NUM_THREADS=1`) | {seq1:.1f} s ({seq1_load}) |",
        f"| the same with `--executor ray --cpus-per-run 1` ({cpus} runs at a time, 1 thread each; local Ray "
        f"started by the command) | {par:.1f} s ({par_load}; {seq / par:.2f}x the first, {seq1 / par:.2f}x the "
        f"second) |",
        f"| its runs.csv equals the one-thread sequential run's, timings aside (same runs, rows, numbers) | "
        f"{'yes' if same else 'NO'} |",
        f"| starting a local Ray instance (`ray.init`) | {over['start']:.1f} s |",
        f"| a fresh worker's first task ({cpus} at once: imports torch and kd_methods) | {over['cold']:.1f} s |",
        f"| Ray overhead per run on warm workers: a task on a finished run (everything but training), one at a "
        f"time | {1000 * over['latency']:.2f} ms, against {1000 * over['local']:.2f} ms for the same call in process |",
        f"| the same, {args.runs} tasks submitted at once ({cpus} workers) | {1000 * over['warm']:.2f} ms per task |",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ray.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
