"""Resolve a run's graph (its teachers first), reuse what is finished, resume what was interrupted.

`execute(cfg, ctx)` trains the runs a run depends on (its teachers', and the one its student starts from;
recursively, each once), then the run itself, and records it: `result.json` and `model.pt` in the run folder, a row in
`results/<paper>/runs.csv` for every table that asked for it and its per-epoch rows (and its teachers')
in `results/<paper>/curves.csv`. `train_one(cfg, ctx)` is the step every
executor shares: with the teachers finished, it takes the run's lock so two processes never train it
twice, and trains or resumes it through the one engine.
"""
from __future__ import annotations

import gc
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..engine import distributed as dist
from ..engine.checkpoint import load_checkpoint, load_verified, remove_temporaries
from ..engine.trainer import EngineOptions, pick_device, precision, train_run
from ..errors import CheckpointError, NumericalFault, UserError
from ..models.factory import model_from_state
from .spec import upstream
from .store import RunStore, append_results_row, device_name, write_json


@dataclass
class RunContext:
    store: RunStore = field(default_factory=RunStore)
    results_dir: Path = Path("results")
    opts: EngineOptions = field(default_factory=EngineOptions)
    log: callable = print


def image_channels(cfg: dict) -> int:
    """The channels of a run's images (1 for MNIST-like sets): its networks are built for them."""
    from ..data import get_spec
    return get_spec(cfg["dataset"]).input_size[0]


def load_run_model(cfg: dict, store: RunStore, which: str | None = None) -> torch.nn.Module:
    """The trained headline model (or eval model `which`) of a finished run, in eval mode."""
    result = store.result(cfg["run_id"])
    saved = load_checkpoint(store.dir(cfg["run_id"]) / "model.pt")
    name = which or result["model_names"][0]
    return model_from_state(cfg["model"], result["num_classes"], saved["models"][name],
                            in_chans=image_channels(cfg)).eval()


def load_teacher(t: dict, store: RunStore | None) -> torch.nn.Module:
    """A teacher in eval mode: a finished run's model, or a pretrained file checked against its sha256."""
    if "pretrained" in t:
        p = t["pretrained"]
        state = load_verified(Path(p["path"]), p["sha256"])  # its sha256 before anything is built
        state = {k: v for k, v in state.items() if not k.startswith(tuple(p.get("ignore", ())))}  # a head it lacks
        try:
            model = model_from_state(p["model"], p["num_classes"], state)
        except RuntimeError as e:  # missing, unexpected or reshaped keys, one kind per line
            lines = [line.strip() for line in str(e).splitlines() if line.strip()]
            detail = lines[min(1, len(lines) - 1)]
            detail = detail if len(detail) <= 160 else detail[:157] + "..."
            raise CheckpointError(f"pretrained weights {p['path']} do not fit {p['model']} with "
                                  f"{p['num_classes']} classes ({detail}); check the teacher's model and "
                                  f"num_classes") from None
        return model.eval()
    return load_run_model(t, store)


REID_METRICS = ("rank1", "rank5", "rank10", "mAP")  # re-ID datasets, last epoch only


def _summary(cfg: dict, history: list[dict], wall_s: float, model_names: list[str], num_classes: int,
             device: str) -> dict:
    final_stage = history[-1]["stage"]
    final_rows = [r for r in history if r["stage"] == final_stage]
    last = history[-1]
    extra = {k: v for k, v in last.items() if k.endswith(("_top1_err", "_top5_err", "entropy") + REID_METRICS)
             and k not in ("top1_err", "top5_err")}
    for r in history:  # each stage's last-epoch losses, e.g. "paraphraser_loss_rec" (FEED's Figure 4-5 probes)
        extra.update({f"{r['stage']}_{k}": v for k, v in r.items() if k.startswith("loss")})
    return dict(run_id=cfg["run_id"], top1_err=last["top1_err"], top5_err=last["top5_err"],
                best_top1_err=min(r["top1_err"] for r in final_rows), epochs=last["epoch"],
                wall_s=round(wall_s, 2), model_names=model_names, num_classes=num_classes,
                device=device, extra=extra, finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))


def _results_row(cfg: dict, result: dict, status: str = "finished") -> dict:
    labels = cfg.get("labels", {})
    return dict(run_id=cfg["run_id"], paper=labels.get("paper", ""), table=labels.get("table", ""),
                label=labels.get("label", ""), dataset=cfg["dataset"], model=cfg["model"],
                method=cfg["method"], seed=cfg["seed"], budget=cfg["budget"], epochs=result.get("epochs", ""),
                top1_err=result.get("top1_err", ""), top5_err=result.get("top5_err", ""),
                best_top1_err=result.get("best_top1_err", ""), wall_s=result.get("wall_s", ""),
                config_hash=cfg["run_id"], status=status, device=result.get("device", ""),
                finished_at=result.get("finished_at", ""),
                extra=json.dumps(result.get("extra", {}), sort_keys=True),
                teachers=" ".join(t["run_id"] for t in cfg["teachers"] if "run_id" in t),
                init=(cfg.get("init") or {}).get("run_id", ""))


def record(cfg: dict, result: dict, ctx: RunContext, status: str = "finished") -> None:
    """The run's row in results/<paper>/runs.csv and, when it finished, its and its teachers' per-epoch
    rows in results/<paper>/curves.csv: everything a report draws, so results/ needs no runs/ folder."""
    paper = cfg.get("labels", {}).get("paper")
    if paper and dist.is_main():
        curves = {}
        if status == "finished":
            for run_id in [cfg["run_id"]] + [d["run_id"] for d in upstream(cfg)]:
                curves[run_id] = ctx.store.metrics(run_id)
        append_results_row(ctx.results_dir, paper, _results_row(cfg, result, status),
                           curves={k: v for k, v in curves.items() if v})


def execute(cfg: dict, ctx: RunContext | None = None) -> dict:
    """Make sure the run `cfg` is finished, its teachers' runs first; records its runs.csv row and
    returns its result record."""
    ctx = ctx or RunContext()
    if not ctx.store.is_finished(cfg["run_id"]):
        for dependency in upstream(cfg):  # teachers' runs and the run the student starts from
            execute(dependency, ctx)
    result = train_one(cfg, ctx)
    record(cfg, result, ctx)
    return result


def train_one(cfg: dict, ctx: RunContext) -> dict:
    """Make sure the run `cfg` is finished, given that its teachers' runs are (an executor's run graph
    orders them): take the run's lock, train or resume it, return its result record. Records no row."""
    store, run_id = ctx.store, cfg["run_id"]
    if store.is_finished(run_id):
        return store.result(run_id)
    missing = [d["run_id"] for d in upstream(cfg) if not store.is_finished(d["run_id"])]
    if missing:
        raise RuntimeError(f"run {run_id} was started before the run it needs, {missing[0]}, finished")
    busy = f"[wait] {run_id} is being trained by another process; waiting for it to finish"
    lock = store.lock(run_id, on_wait=lambda: ctx.log(busy)) if not dist.is_distributed() else _no_lock()
    with lock:
        if not store.is_finished(run_id):
            _train(cfg, ctx)
            # Feature taps' hooks tie a run's networks into reference cycles: free them before the
            # next run builds its own, or a reproduction holds several runs' teachers at once.
            gc.collect()
    return store.result(run_id)


class _no_lock:
    # Under torchrun every rank must enter training together; rank 0 alone writes, so no lock is taken.
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _train(cfg: dict, ctx: RunContext) -> None:
    store, run_id = ctx.store, cfg["run_id"]
    device = pick_device(ctx.opts.device)
    labels = cfg.get("labels", {})
    what = f"{labels.get('table') or ''} {labels.get('label') or ''}".strip() or cfg["method"]
    run_dir = store.dir(run_id)
    resuming = (run_dir / "last.pt").exists() or (run_dir / "last.pt.prev").exists()
    ctx.log(f"[{'resume' if resuming else 'train'}] {run_id} {cfg['method']} {cfg['model']} "
            f"seed {cfg['seed']} on {cfg['dataset']} ({what})")
    teachers = [load_teacher(t, store) for t in cfg["teachers"]]
    init = cfg.get("init")  # the student of another run: its starting weights
    init_state = load_run_model(init, store).state_dict() if init and "run_id" in init else None
    manifest = run_dir / "manifest.json"
    manifest_before = manifest.read_bytes() if manifest.is_file() else None
    if dist.is_main():
        if run_dir.is_dir():
            remove_temporaries(run_dir)  # half-written files of a killed process (we hold the run's lock)
        store.start(cfg, device)
    t0 = time.time()
    try:
        out = train_run(cfg, run_dir, teachers, ctx.opts, init_state)
    except NumericalFault as e:
        if dist.is_main():
            store.update_manifest(run_id, status="failed", failure=str(e),
                                  ended_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
            record(cfg, dict(device=device_name(device, precision(ctx.opts, device))), ctx, status="failed")
        raise
    except UserError:  # bad input found by the engine (data, checkpoint): leave the folder as it was
        if dist.is_main():
            store.undo_start(run_id, manifest_before)
        raise
    if dist.is_main():  # train_run wrote model.pt
        result = _summary(cfg, out["history"], time.time() - t0, out["model_names"], out["num_classes"],
                          device_name(device, precision(ctx.opts, device)))
        # The manifest before result.json (the mark of a finished run): a finished run's manifest never
        # says "running", and a kill in between resumes from the last checkpoint and trains the final
        # epoch again (its weights went to model.pt, not to a checkpoint).
        store.update_manifest(run_id, status="finished", ended_at=result["finished_at"], wall_s=result["wall_s"])
        write_json(run_dir / "result.json", result)
        # Finished: the training checkpoints (weights + optimizer state of an earlier epoch) go; model.pt
        # and result.json hold what a student needs, results/<paper>/ what a report needs.
        for name in ("last.pt", "last.pt.prev"):
            (run_dir / name).unlink(missing_ok=True)
    dist.barrier()
