"""The one training loop every method runs through.

`train_run(cfg, run_dir, teachers)` builds the data, the student and the method, then runs the method's
stages in order, each with its own optimiser and schedule (a stage whose length is 0 is skipped). A step
updates everything the stage trains at once, or, for a stage with `updates`, each group in turn from its
own forward pass (`train_step`). After every epoch it evaluates each of the
method's eval models (top-1/top-5 error, mean posterior entropy), writes a checkpoint atomically and
rewrites `metrics.csv` from the checkpoint's history, so a killed run resumes from its last epoch and
ends with the same numbers as an uninterrupted one (the data order and augmentation of an epoch are a
pure function of (seed, epoch); the RNG state is checkpointed too). After the final epoch it writes the
eval models' weights (`model.pt`) instead of a checkpoint: weights and optimiser state of a finished
run are never read again (a ResNeXt-29 16x64d checkpoint is 0.55 GB and seconds of fsync).

Fast paths are on where they help: channels_last everywhere; bf16 autocast on CUDA and on CPUs with
native bf16 arithmetic (AVX512-BF16 or AMX: with channels_last, 1.8x on a 2-core EPYC), teachers under
inference_mode (see `Distiller`), losses accumulated on the device and read once per epoch.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..data import DataConfig, build_data
from ..errors import CheckpointError, ConfigError, NumericalFault
from ..methods import StepContext, build_method
from ..models import create_model, uniform_init
from . import distributed as dist
from .checkpoint import load_checkpoint, load_verified, save_atomic
from .metrics import MetricsLog, evaluate, evaluate_retrieval
from .optim import build_optimizer, lr_at, set_lr


@dataclass
class EngineOptions:
    device: str = "auto"          # auto | cpu | cuda | cuda:N
    amp: bool = True              # bf16 autocast where the device computes bf16 natively (`fast_device`)
    channels_last: bool = True    # channels_last weights and activations
    compile: bool = False         # torch.compile the student and teachers
    progress: bool | None = None  # tqdm bar; None: only on an interactive terminal outside CI
    deterministic: bool = False   # torch.use_deterministic_algorithms (CPU resume tests)


def pick_device(name: str = "auto") -> torch.device:
    """`auto` (the local GPU if any, else the CPU), `cpu`, `cuda` or `cuda:N`; anything else, or a GPU
    this machine does not have, is a ConfigError."""
    if name == "auto":
        if dist.is_distributed():
            return dist.local_device()
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda") or (device.type == "cpu" and device.index):
        raise ConfigError(f"--device {name!r} is not a device kd-bench trains on; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            have = f"only {count} GPU(s) (cuda:0..cuda:{count - 1})" if count else "no CUDA GPU"
            raise ConfigError(f"--device {name}: this machine has {have}; use --device auto or cpu")
    return device


@functools.cache
def cpu_has_bf16() -> bool:
    """True on CPUs with native bf16 arithmetic (AVX512-BF16, AMX-BF16), where oneDNN runs bf16
    convolutions faster than fp32; elsewhere CPU autocast emulates bf16 and is slower."""
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def fast_device(device: torch.device) -> bool:
    """Whether bf16 autocast pays on this device (channels_last is used everywhere)."""
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16())


def use_channels_last(opts: EngineOptions, networks) -> bool:
    """channels_last on every device (oneDNN's convolutions are NHWC-native: 1.28x in fp32, kd-bench
    bench), unless a network of the run declares itself slower in it (`prefers_channels_last`)."""
    return opts.channels_last and all(getattr(m, "prefers_channels_last", True)
                                      for net in networks for m in net.modules())


def precision(opts: EngineOptions, device: torch.device) -> str:
    """What a run's arithmetic was: bf16 autocast or fp32 (reports name it beside the hardware)."""
    return "bf16" if opts.amp and fast_device(device) else "fp32"


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def show_progress(opts: EngineOptions) -> bool:
    if opts.progress is not None:
        return opts.progress and dist.is_main()
    return sys.stderr.isatty() and not os.environ.get("CI") and dist.is_main()


def data_config(cfg: dict, world: int = 1) -> DataConfig:
    """The spec's batch size is global: each of `world` ranks takes an equal share of every step.

    Under `lr_scaling: linear` it is each rank's batch instead (the global batch grows with `world`,
    and the learning rate with it: Goyal et al., 2017).
    """
    if cfg["lr_scaling"] == "linear":
        world = 1
    elif cfg["batch_size"] % world:
        raise ConfigError(f"batch_size {cfg['batch_size']} does not split over {world} processes; "
                          f"use a multiple of {world}")
    return DataConfig(name=cfg["dataset"], root=cfg["data_root"], augment=cfg["augment"],
                      preprocess=cfg["preprocess"], train_subset=cfg["train_subset"],
                      test_subset=cfg["test_subset"], batch_size=cfg["batch_size"] // world, seed=cfg["seed"])


def init_student(student: nn.Module, init: dict, num_classes: int) -> None:
    """Start the student from a verified weights file (the spec's `init`).

    Every tensor must fit; only a classifier trained for another number of classes (ImageNet weights for
    a 200-class task) is skipped, and the student keeps its fresh classifier, and so are the tensors under
    the init's `ignore` prefixes (an auxiliary head the student does not have).
    """
    state = load_verified(Path(init["path"]), init["sha256"])
    state = {k: v for k, v in state.items() if not k.startswith(tuple(init.get("ignore", ())))}
    head = getattr(student, "pretrained_cfg", {}).get("classifier", "fc") + "."
    new_head = init["num_classes"] != num_classes
    if new_head:
        state = {k: v for k, v in state.items() if not k.startswith(head)}
    own = student.state_dict()
    missing = [k for k in own if k not in state and not (new_head and k.startswith(head))]
    unexpected = [k for k in state if k not in own]
    reshaped = [k for k in state if k in own and state[k].shape != own[k].shape]
    if missing:
        what = f"{len(missing)} of the student's tensors are missing, e.g. {missing[0]}"
    elif unexpected:
        what = f"{len(unexpected)} tensors are not the student's, e.g. {unexpected[0]}"
    elif reshaped:
        k = reshaped[0]
        what = f"{k} has shape {tuple(state[k].shape)}, the student's {tuple(own[k].shape)}"
    if missing or unexpected or reshaped:
        raise CheckpointError(f"init weights {init['path']} do not fit {init['model']}: {what}; "
                              f"check init.model and init.num_classes")
    student.load_state_dict(state, strict=not new_head)


@dataclass
class StagePlan:
    stage: object
    phase: dict
    epochs: int
    total_steps: int


def plan_stages(distiller, cfg: dict, steps_per_epoch: int) -> list[StagePlan]:
    stages = distiller.stages()
    names = {s.name for s in stages}
    extra = sorted(set(cfg["stages"]) - names)
    if extra:
        raise ConfigError(f"stages.{extra[0]}: method '{cfg['method']}' has no stage '{extra[0]}'; "
                          f"its stages are {', '.join(s.name for s in stages) or 'none'}")
    plans = []
    for s in stages:
        phase = cfg["stages"].get(s.name, cfg["train"])
        if phase["unit"] == "epoch":
            epochs = int(math.ceil(phase["length"]))
            total = int(round(phase["length"] * steps_per_epoch))
        else:
            total = int(phase["length"])
            epochs = int(math.ceil(total / steps_per_epoch))
        plans.append(StagePlan(s, phase, epochs, total))
    if plans and not any(p.total_steps for p in plans):
        raise ConfigError(f"every stage of method '{cfg['method']}' has length 0, so the run trains nothing; "
                          f"give at least one stage a length")
    return plans


def train_run(cfg: dict, run_dir: Path, teachers: list[nn.Module], opts: EngineOptions | None = None,
              init_state: dict | None = None) -> dict:
    """Train (or resume) one resolved config in `run_dir`; returns the final result record.

    init_state: the student's starting weights when the spec's `init` names another run (its trained
    student, loaded by the runner); an `init` weights file is read and checked here."""
    opts = opts or EngineOptions()
    run_dir = Path(run_dir)
    device = pick_device(opts.device)
    cuda = device.type == "cuda"
    if opts.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    seed_everything(cfg["seed"])
    data = build_data(data_config(cfg, dist.world_size()), device, rank=dist.rank(), world_size=dist.world_size())
    student = create_model(cfg["model"], num_classes=data.num_classes, in_chans=data.input_size[0])
    if cfg.get("uniform_init"):
        uniform_init(student, cfg["uniform_init"])
    if cfg.get("init") and "run_id" in cfg["init"]:
        student.load_state_dict(init_state)
    elif cfg.get("init"):
        init_student(student, cfg["init"], data.num_classes)
    distiller = build_method(cfg["method"], student, teachers, data.num_classes, **cfg["method_args"])
    if cfg.get("init") and "path" in cfg["init"]:  # the file starts every trained network of its architecture
        for net in distiller.eval_models().values():        # (a DML cohort's same-architecture peers)
            if net is not student and getattr(net, "pretrained_cfg", {}).get("architecture") == cfg["init"]["model"]:
                init_student(net, cfg["init"], data.num_classes)
    if cfg.get("bn_stats") == "cumulative":  # smoke budget: see kd_methods.runs.spec.resolve
        for m in distiller.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = None
    distiller.to(device)
    if use_channels_last(opts, [distiller, *teachers]):
        distiller.to(memory_format=torch.channels_last)
    if opts.compile:
        for m in [distiller.student, *distiller.teachers]:
            if m is not None:
                m.compile()
    plans = plan_stages(distiller, cfg, len(data.train))
    lr_mult = dist.world_size() if cfg["lr_scaling"] == "linear" else 1.0
    fast = precision(opts, device) == "bf16"
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if fast else nullcontext()

    ckpt_path = run_dir / "last.pt"
    ckpt = load_checkpoint(ckpt_path)
    log = MetricsLog(run_dir / "metrics.csv", history=ckpt["history"] if ckpt else [])
    start_stage, start_epoch = (ckpt["stage_index"], ckpt["stage_epoch"]) if ckpt else (0, 0)
    if ckpt:
        distiller.load_state_dict(ckpt["model"])
        torch.set_rng_state(ckpt["rng"])
    global_epoch = sum(p.epochs for p in plans[:start_stage]) + start_epoch

    if not plans and not log.history:  # evaluation-only methods (ensembles)
        log.append(dict(epoch=0, stage="eval", stage_epoch=0, lr=0.0,
                        **evaluate(distiller, data.test, autocast), wall_s=0.0))
    t_start = time.time()
    final_stage = max((i for i, p in enumerate(plans) if p.total_steps), default=-1)
    for si in range(start_stage, len(plans)):
        plan = plans[si]
        if not plan.total_steps:  # a stage the spec skips (length 0): nothing to build or train
            continue
        distiller.set_trainable(plan.stage)
        optimizer = build_optimizer(distiller.parameters_for(plan.stage), plan.phase["optim"], lr_mult)
        first_epoch = start_epoch if si == start_stage else 0
        if ckpt and si == start_stage and first_epoch > 0:
            optimizer.load_state_dict(ckpt["optimizer"])
        steps = update_steps(distiller, plan.stage, device)
        for epoch in range(first_epoch, plan.epochs):
            t0 = time.time()
            losses, lr = _train_epoch(steps, distiller, optimizer, data, plan, epoch, global_epoch,
                                      autocast, lr_mult, opts)
            row = dict(epoch=global_epoch + 1, stage=plan.stage.name, stage_epoch=epoch + 1,
                       stage_iteration=min((epoch + 1) * len(data.train), plan.total_steps), lr=lr, **losses)
            dist.broadcast_buffers(distiller)  # every rank checks and evaluates the model rank 0 checkpoints
            broken = _first_nonfinite(distiller)
            if broken:  # a finite loss can still leave inf weights after the epoch's last step
                raise _diverged(f"{broken} became non-finite in stage '{plan.stage.name}' epoch {epoch + 1}",
                                global_epoch)
            row.update(evaluate(distiller, data.test, autocast))
            if data.retrieval is not None and si == final_stage and epoch + 1 == plan.epochs:
                row.update(evaluate_retrieval(distiller, data.retrieval, autocast))  # once: the gallery is big
            row["wall_s"] = round(time.time() - t0, 3)
            log.append(row)
            global_epoch += 1
            last = epoch + 1 == plan.epochs
            if last and si == len(plans) - 1:
                break  # the final epoch's weights go to model.pt below, not to a training checkpoint
            state = dict(model=distiller.state_dict(), history=log.history, rng=torch.get_rng_state(),
                         stage_index=si + 1 if last else si, stage_epoch=0 if last else epoch + 1)
            if not last:  # the next stage builds its own optimiser: a finished stage's state is never read
                state["optimizer"] = optimizer.state_dict()
            if dist.is_main():
                save_atomic(state, ckpt_path)
                log.write()
            dist.barrier()
        start_epoch = 0

    final_models = {name: m.state_dict() for name, m in distiller.eval_models().items()}
    if dist.is_main():  # the final weights, then the history that ends with them (a kill before the
        # two resumes from the last checkpoint and trains the final epoch again)
        save_atomic(dict(models=final_models), run_dir / "model.pt", keep_previous=False)
        log.write()
    dist.barrier()
    return dict(history=log.history, models=final_models, train_wall_s=time.time() - t_start,
                model_names=list(final_models), num_classes=data.num_classes)


def update_steps(distiller, stage, device: torch.device) -> list[tuple[tuple[str, ...] | None, object]]:
    """The updates of one step, in order, each as (groups, the callable its forward goes through): one
    update of everything the stage trains, or one per entry of `stage.updates`. Each gets its own DDP
    wrapper, built while only its groups require grad, so each averages exactly its own gradients."""
    if not stage.updates:
        distiller.set_trainable(stage)
        return [(None, dist.wrap(distiller, device))]
    steps = []
    for groups in stage.updates:
        distiller.set_trainable(stage, groups)
        steps.append((tuple(groups), dist.wrap(distiller, device)))
    return steps


def train_step(steps, distiller, optimizer, images, targets, ctx: StepContext, autocast=nullcontext()
               ) -> dict[str, torch.Tensor]:
    """One optimiser step of a batch: each update's forward, backward and step in turn (one optimiser for
    the whole stage: a group without a gradient is left untouched, momentum and weight decay included).
    Returns the step's losses, detached, with their sum under "loss"."""
    out: dict[str, torch.Tensor] = {}
    for groups, step_fn in steps:
        if groups is not None:  # only this update's groups build a graph and receive gradients
            distiller.set_trainable(ctx.stage, groups)
        with autocast:
            _, losses = step_fn(images, targets, dataclasses.replace(ctx, update=groups))
        loss = sum(losses.values())
        loss.backward()
        optimizer.step()
        # Free the gradients once the step has used them: kept, they would sit through the next forward
        # pass (its activations are the step's peak) and, after a stage's last step, through every later
        # stage (0.8 GB for a ResNeXt-29 16x64d student and FEED's five NTLs; 0.7 GB of FT paraphrasers).
        optimizer.zero_grad(set_to_none=True)
        for k, v in [*losses.items(), ("loss", loss)]:
            out[k] = out.get(k, 0) + v.detach().float()
    return out


def _train_epoch(steps, distiller, optimizer, data, plan: StagePlan, epoch: int, global_epoch: int,
                 autocast, lr_mult: float, opts: EngineOptions) -> tuple[dict, float]:
    from tqdm.auto import tqdm

    distiller.train()
    data.train.set_epoch(global_epoch)
    spe = len(data.train)
    sums: dict[str, torch.Tensor] = {}  # stay on the device: no host sync inside the epoch
    n = 0
    lr = 0.0
    unit = plan.phase["unit"]
    bar = tqdm(data.train, total=spe, leave=False, disable=not show_progress(opts),
               desc=f"{plan.stage.name} epoch {epoch + 1}/{plan.epochs}")
    for i, (images, targets) in enumerate(bar):
        step = epoch * spe + i
        if step >= plan.total_steps:
            break
        position = step if unit == "iter" else epoch + i / spe
        lr = lr_at(plan.phase["optim"], position, plan.phase["length"], lr_mult)
        set_lr(optimizer, lr)
        ctx = StepContext(plan.stage, epoch=epoch, step=step, total_steps=plan.total_steps)
        for k, v in train_step(steps, distiller, optimizer, images, targets, ctx, autocast).items():
            sums[k] = sums.get(k, 0) + v
        n += 1
    means = {k: v / max(1, n) for k, v in sums.items()}
    means = dist.all_reduce_mean(means)
    values = {k: float(v) for k, v in means.items()}  # the epoch's one host sync for losses
    bad = [k for k, v in values.items() if not math.isfinite(v)]
    if bad:
        raise _diverged(f"{bad[0]} became {values[bad[0]]} in stage '{plan.stage.name}' epoch {epoch + 1}",
                        global_epoch)
    return {k: round(v, 6) for k, v in sorted(values.items())}, lr


def _first_nonfinite(distiller) -> str | None:
    """The name of the first weight or buffer holding a NaN or inf (one host sync when all are finite).

    A tensor's smallest and largest entries are finite exactly when all its entries are (both propagate
    NaN); `aminmax` reads each tensor once and allocates nothing its size (7x faster than
    isfinite().all() on a ResNeXt-29 16x64d)."""
    floats = [(k, v) for k, v in distiller.state_dict().items() if v.is_floating_point() and v.numel()]
    if not floats or bool(torch.isfinite(torch.stack([torch.stack(torch.aminmax(v)).float()
                                                       for _, v in floats])).all()):
        return None
    return next(k for k, v in floats if not bool(torch.isfinite(v).all()))


def _diverged(what: str, epochs_done: int) -> NumericalFault:
    """The run stops; its checkpoint (written after the last good epoch, if any) stays as it was."""
    kept = (f"the checkpoint of epoch {epochs_done} is kept" if epochs_done
            else "no epoch had finished, so there is no checkpoint")
    return NumericalFault(f"{what}; {kept}; lower the learning rate or check the inputs")
