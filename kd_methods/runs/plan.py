"""`kd-bench plan`: every run a reproduction needs, where it stands and what it costs. Writes nothing.

`make_plan` resolves the selected tables at a budget into the run graph (cells that cannot run here,
for want of data or weights, included and marked), reads each run's folder (finished, resumable from
epoch k, training now, failed, or new; the teachers it still waits on) and prices it (`cost`): training
FLOPs per image and in total, seconds on this machine and on a named GPU, the totals (each run once)
and the critical path, the longest teacher -> student chain of work left, which no number of devices
shortens. `render_text` prints it grouped by table; `--json` prints the dict itself.
"""
from __future__ import annotations

import csv
import json
import os
import socket
from pathlib import Path

from .cost import MEASURE_MAX_FLOP, Costs, gpu as named_gpu, human_seconds
from .graph import RunGraph
from .store import RunStore, cpu_model
from .tables import Paper, cell_label, missing_inputs, plan_cells

STATUSES = ("finished", "training", "resumable", "failed", "new")


def run_status(store: RunStore, run_id: str) -> tuple[str, int]:
    """(status, epochs done) of a run from its folder alone."""
    d = store.dir(run_id)
    epochs = _rows(d / "metrics.csv")
    if store.is_finished(run_id):
        return "finished", epochs
    manifest = _json(d / "manifest.json")
    if manifest.get("status") == "failed":
        return "failed", epochs
    if manifest.get("status") == "running" and _alive(manifest):
        return "training", epochs
    if (d / "last.pt").is_file() or (d / "last.pt.prev").is_file():
        return "resumable", epochs
    return "new", 0


def make_plan(paper: Paper, budget: str = "paper", data: str = "auto", data_root: str = "data", tables=None,
              seeds: int | None = None, runs_dir: str | Path = "runs", gpu: str = "H100",
              gpu_util: float | None = None, bench_csv: Path = Path("results/bench/bench.csv"),
              costs: Costs | None = None, measure: bool = True) -> dict:
    """The plan as plain data (what `--json` prints). `measure`: time steps on this machine."""
    costs = costs or Costs()
    device = named_gpu(gpu, gpu_util, bench_csv)
    planned = plan_cells(paper, budget, data, data_root, tables, seeds)
    graph = RunGraph.from_cells(paper.key, planned, blocked=True)
    store = RunStore(runs_dir)
    cells = {}
    for cfg in graph.records:
        cells.setdefault(cfg["run_id"], []).append(f"{cfg['labels']['table']} | {cfg['labels']['label']}")
    runs = {}
    for run_id, node in graph.nodes.items():
        cfg, cost = node.cfg, costs.run(node.cfg)
        status, done = run_status(store, run_id)
        left = 0.0 if status == "finished" else cost.flops * max(0.0, 1 - done / cost.epochs)
        rate = costs.rate(cfg) if measure else None
        runs[run_id] = dict(
            run_id=run_id, tables=node.tables, cells=cells.get(run_id, []), model=cfg["model"],
            method=cfg["method"], dataset=cfg["dataset"], seed=cfg["seed"], batch_size=cfg["batch_size"],
            teachers=node.deps, pretrained_teachers=[t["pretrained"]["model"] for t in cfg["teachers"]
                                                     if "pretrained" in t],
            status=status, epochs_done=done, epochs=cost.epochs, images_per_epoch=cost.train_images,
            train_images=sum(s.images for s in cost.stages), test_images=cost.test_images,
            stages=[dict(name=s.name, steps=s.steps, images=s.images, flops_per_image=s.flops_per_image)
                    for s in cost.stages],
            flops_per_image=cost.train_flops_per_image, eval_flops_per_image=cost.eval_flops_per_image,
            flops=cost.flops, flops_left=left, counted_on=cost.counted_on,
            seconds_here=cost.flops / rate.flop_per_s if rate else None,
            seconds_here_left=left / rate.flop_per_s if rate else None,
            seconds_gpu=device.seconds(cfg["model"], cost.flops),
            seconds_gpu_left=device.seconds(cfg["model"], left),
            cannot_run=missing_inputs([cfg], data_root))
    for r in runs.values():
        r["waits_on"] = [d for d in r["teachers"] if runs[d]["status"] != "finished"]
    chain, _ = graph.longest_path(lambda r: runs[r]["flops_left"])
    here = graph.longest_path(lambda r: runs[r]["seconds_here_left"] or 0.0)[1] if measure else None
    on_gpu = graph.longest_path(lambda r: runs[r]["seconds_gpu_left"])[1]
    total = lambda key: sum(r[key] or 0.0 for r in runs.values())  # noqa: E731
    gpu_left = total("seconds_gpu_left")
    return dict(
        paper=paper.key, title=paper.title, budget=budget, data=data, data_root=data_root, seeds=seeds,
        tables=list(dict.fromkeys(t.key for t, *_ in planned)),
        runs=list(runs.values()),
        cells_not_runnable=[dict(table=t.key, cell=cell_label(c), why=why) for t, c, _, why in planned if why],
        totals=dict(runs=len(runs), by_status={s: sum(r["status"] == s for r in runs.values()) for s in STATUSES},
                    runnable_here=sum(not r["cannot_run"] for r in runs.values()), flops=total("flops"),
                    flops_left=total("flops_left"),
                    seconds_here=total("seconds_here") if measure else None,
                    seconds_here_left=total("seconds_here_left") if measure else None,
                    seconds_gpu=total("seconds_gpu"), seconds_gpu_left=gpu_left,
                    gpu_wall_at_least={n: max(gpu_left / n, on_gpu) for n in (1, 8, 64)}),
        critical_path=dict(runs=chain, flops_left=sum(runs[r]["flops_left"] for r in chain),
                           seconds_here_left=here, seconds_gpu_left=on_gpu),
        this_machine=dict(cpu=cpu_model(), cores=os.cpu_count(), threads=_threads(), load_average=_load(),
                          rates=[vars(r) for r in costs.rates()]) if measure else None,
        gpu=dict(name=device.name, peak_bf16=device.peak, assumed_util=device.assumed_util,
                 util_source="given (--gpu-util)" if gpu_util is not None else "results/bench/bench.csv",
                 measured_util=device.measured_util),
    )


def render_text(plan: dict) -> str:
    runs = {r["run_id"]: r for r in plan["runs"]}
    t = plan["totals"]
    gpu = plan["gpu"]
    seeds = "" if plan["seeds"] is None else f", at most {plan['seeds']} seeds per cell"
    lines = [f"{plan['title']} ({plan['paper']}): plan at budget '{plan['budget']}', data {plan['data']} "
             f"(data root {plan['data_root']}/){seeds}",
             f"{t['runs']} runs: " + ", ".join(f"{n} {s}" for s, n in t["by_status"].items() if n)
             + (f"; {t['runs'] - t['runnable_here']} cannot run here (data or weights missing)"
                if t["runnable_here"] < t["runs"] else ""), ""]
    header = (f"  {'run':<13} {'status':<15} {'model':<24} {'method':<16} {'teachers':<9} {'epochs x images':>18} "
              f"{'GFLOP/img':>10} {'FLOPs':>9} {'s here':>9} {'s ' + gpu['name']:>9}  waits on / note")
    for table in plan["tables"]:
        ids = [r for r in runs if table in runs[r]["tables"]]
        lines += [f"## {table}: {len(ids)} runs", header]
        for run_id in ids:
            r = runs[run_id]
            status = r["status"] + (f" {r['epochs_done']}/{r['epochs']}" if r["status"] in ("resumable", "training",
                                                                                             "failed") else "")
            teachers = len(r["teachers"]) + len(r["pretrained_teachers"])
            note = ", ".join(d[:8] for d in r["waits_on"]) or ""
            if r["cannot_run"]:
                note = (note + "; " if note else "") + r["cannot_run"]
            shared = "*" if len(r["tables"]) > 1 else " "
            lines.append(f"  {run_id}{shared} {status:<15} {r['model']:<24} {r['method']:<16} {teachers or '-':<9} "
                         f"{r['epochs']:>6} x {r['images_per_epoch']:>9,} {r['flops_per_image'] / 1e9:>10.3f} "
                         f"{r['flops']:>9.3g} {_num(r['seconds_here'])} {r['seconds_gpu']:>9.3g}  {note}")
        lines.append("")
    lines.append("  * the run serves several tables; totals count it once. FLOPs and seconds are each run's "
                 "whole training; 'left' below subtracts finished epochs.")
    lines.append("")
    cp = plan["critical_path"]
    lines += ["## Totals (each run once)",
              f"  training FLOPs: {t['flops']:.3g} in all, {t['flops_left']:.3g} left",
              f"  this machine, one run at a time: {_both(t['seconds_here'])} in all, {_both(t['seconds_here_left'])} left",
              f"  {gpu['name']} ({_util(gpu)}): {_both(t['seconds_gpu'])} in all on one GPU, {_both(t['seconds_gpu_left'])} left",
              "  wall time left at least (the larger of work / GPUs and the critical path): "
              + ", ".join(f"{n} x {gpu['name']} {_both(s)}" for n, s in t["gpu_wall_at_least"].items()),
              f"  critical path (longest teacher -> student chain of work left): "
              f"{' -> '.join(r[:8] for r in cp['runs']) or 'none'}; {cp['flops_left']:.3g} FLOPs, "
              f"{_both(cp['seconds_here_left'])} on this machine, {_both(cp['seconds_gpu_left'])} on {gpu['name']}",
              ""]
    lines += ["## How these were estimated"]
    lines.append("  FLOPs: torch.utils.flop_counter's formulas on one batch of 2 images per distinct "
                 "method/model/teachers/input (forward and backward of what trains, the teachers' forwards, the "
                 "method's own modules; convolutions and matmuls only), times the images each stage trains on, plus "
                 "the eval models' forward on the test split every epoch. Times are compute only: what a run spends "
                 "besides (building its data and networks, starting a process) is not counted, and it is most of a "
                 "smoke run.")
    machine = plan["this_machine"]
    if machine:
        load = "/".join(f"{x:.2f}" for x in machine["load_average"]) if machine["load_average"] else "?"
        lines.append(f"  this machine: {machine['cpu']}, {machine['cores']} cores, torch uses {machine['threads']} "
                     f"threads; load average {load} while measuring (other work slows the measured steps). Rates "
                     f"from the fastest of a few timed plain training steps (after a warm-up step) at a small "
                     f"batch, scaled by FLOPs; full-size batches run faster per image, so these times err long:")
        for r in machine["rates"]:
            if r["borrowed_from"] or not r["flop_per_s"]:
                continue
            lines.append(f"    {r['model']}: measured, batch {r['batch']}, {r['seconds_per_step']:.3f} s/step, "
                         f"{r['flop_per_s'] / 1e9:.2f} GFLOP/s")
        for r in machine["rates"]:
            if not r["flop_per_s"]:
                lines.append(f"    {r['model']}: not timed (a step at batch 1 exceeds the "
                             f"{MEASURE_MAX_FLOP / 1e9:g} GFLOP the planner times here); takes the rate of the "
                             f"measured model with the most FLOPs per image")
    else:
        lines.append("  this machine: not measured (--no-measure)")
    measured = ", ".join(f"{m} {u:.1%}" for m, u in gpu["measured_util"].items())
    lines.append(f"  {gpu['name']}: dense bf16 peak {gpu['peak_bf16'] / 1e12:g} TFLOP/s x utilisation; "
                 + (f"measured by make bench: {measured}; other models " if measured else "")
                 + f"{gpu['assumed_util']:.0%} {'(given)' if gpu['util_source'].startswith('given') else '(an assumption: make bench has not measured it on this GPU)'}.")
    if plan["cells_not_runnable"]:
        lines += ["", "## Cells that cannot run here (their runs are priced above all the same)"]
        lines += [f"  {c['table']} | {c['cell']}: {c['why']}" for c in plan["cells_not_runnable"]]
    return "\n".join(lines) + "\n"


def _num(x) -> str:
    return f"{x:>9.3g}" if x is not None else f"{'-':>9}"


def _both(seconds) -> str:
    return "-" if seconds is None else f"{seconds:.4g} s ({human_seconds(seconds)})"


def _util(gpu: dict) -> str:
    return (f"{gpu['assumed_util']:.0%} of {gpu['peak_bf16'] / 1e12:g} TFLOP/s bf16"
            + ("" if gpu["util_source"].startswith("given") or gpu["measured_util"] else ", assumed"))


def _rows(path: Path) -> int:
    if not path.is_file():
        return 0
    with open(path, newline="") as f:
        return sum(1 for _ in csv.DictReader(f))


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _alive(manifest: dict) -> bool:
    """The manifest's process runs on this host (a process elsewhere cannot be checked: assume not)."""
    if manifest.get("host") != socket.gethostname() or not manifest.get("pid"):
        return False
    try:
        os.kill(int(manifest["pid"]), 0)
    except (OSError, ValueError):
        return False
    return True


def _threads() -> int:
    import torch
    return torch.get_num_threads()


def _load():
    try:
        return list(os.getloadavg())
    except OSError:
        return None


__all__ = ["make_plan", "render_text", "run_status", "STATUSES"]
