"""What a run costs: training FLOPs counted on one batch, images it will see, time on this machine and
on a named GPU.

- **FLOPs per image** of every stage of a run's training step (forward and backward of what trains, the
  teachers' forwards and the method's own modules included) are counted with
  `torch.utils.flop_counter` (`engine.flops`) on one batch of 2 images, once per distinct (method,
  model, teachers, input shape, method_args) in this process: five seeds of a cell, or two tables naming
  the same training, cost one count. The eval models' forward on the test split is added per epoch.
  Small networks are counted on real CPU tensors; large ones (over `FAKE_ABOVE_PARAMS` parameters in
  total, or images over 32 px) on fake tensors (`FakeTensorMode`: shapes only, no arithmetic), which
  count the same operations in a fraction of the time.
- **Images** come from the budget's config: phase lengths in epochs or iterations, the batch, the train
  split's size (the subset the budget caps it to, else the published size of the split).
- **Time on this machine**: FLOPs / the FLOP rate of one timed training step of the run's model
  (`measure`): a plain step (forward, backward, SGD update; bf16 autocast and channels_last as the engine
  decides) at a small batch, the fastest of 2 to `MEASURE_STEPS` after one warm-up step (the others
  sharing the machine slow some steps, two threads many times over when cores are oversubscribed), once
  per model. A model whose step at batch 1
  exceeds `MEASURE_MAX_FLOP` is not timed here (it would take too long on a small machine): it takes the
  rate of the measured model with the most FLOPs per image, and the plan says so. Small batches run
  slower per image than the engine's, so these times err long.
- **Time on a GPU**: FLOPs / (its dense bf16 peak x a utilisation): the utilisation `make bench` measured
  for the model on that GPU (MFU of its `gpu <model>` row in results/bench/bench.csv) where there is
  one, else `ASSUMED_GPU_UTIL`, which the plan labels as an assumption.
"""
from __future__ import annotations

import csv
import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from ..data import get_spec
from ..engine.flops import count_flops, peak_bf16
from .preflight import _num_classes, _teacher_key
from .runner import image_channels

FLOP_BATCH = 2                 # images in the counted batch (BatchNorm in train mode needs two)
FAKE_ABOVE_PARAMS = 5_000_000  # count on fake tensors above this many parameters (all networks of a step)
MEASURE_MAX_FLOP = 8e9         # the largest timed step (FLOPs) on this machine
MEASURE_BATCH = 8              # at most this many images in the timed step
MEASURE_STEPS = 5              # timed steps per model (the fastest counts); 2 once MEASURE_MAX_S is spent
MEASURE_MAX_S = 2.0
ASSUMED_GPU_UTIL = 0.25        # fraction of the bf16 peak a training run reaches, where nothing measured it

# (train, test) images of each dataset's full split: the table in kd_methods/data/datasets.py. Market-1501's
# "test" split is its every-10th-training-image probe; the query/gallery ranking after the last epoch
# (3,368 + 15,913 images, once) is not counted.
SPLIT_SIZES = {"cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000), "svhn": (73_257, 26_032),
               "mnist": (60_000, 10_000), "fashion_mnist": (60_000, 10_000), "imagenet": (1_281_167, 50_000), "cub200": (5_994, 5_794),
               "market1501": (12_936, 1_294), "synthetic10": (10_000, 2_000), "synthetic100": (10_000, 2_000),
               "synthetic10_16px": (10_000, 2_000), "synthetic100_16px": (10_000, 2_000),
               "synthetic_mnist": (10_000, 2_000), "synthetic_imagenet": (512, 256)}


@dataclass
class StageCost:
    name: str
    steps: int
    images: int                # training images the stage processes (steps x batch)
    flops_per_image: float     # one training step's FLOPs / batch


@dataclass
class RunCost:
    run_id: str
    model: str
    method: str
    batch_size: int
    epochs: int                # epochs over all stages
    train_images: int          # images per epoch (full batches)
    test_images: int
    stages: list[StageCost]
    eval_flops_per_image: float
    flops: float               # total: every stage's training plus every epoch's evaluation
    counted_on: str            # "cpu" (real tensors) or "fake tensors"

    @property
    def train_flops_per_image(self) -> float:
        """FLOPs per training image, averaged over the stages' images."""
        images = sum(s.images for s in self.stages)
        return sum(s.images * s.flops_per_image for s in self.stages) / images if images else 0.0


@dataclass
class Rate:
    """The measured (or borrowed) training speed of one model on this machine."""
    model: str
    flop_per_s: float
    batch: int = 0
    seconds_per_step: float = 0.0
    borrowed_from: str = ""    # set when the model was too large to time here


@dataclass
class GPU:
    name: str
    peak: float                                     # dense bf16 FLOP/s
    measured_util: dict[str, float] = field(default_factory=dict)   # model -> MFU measured by make bench
    assumed_util: float = ASSUMED_GPU_UTIL

    def util(self, model: str) -> tuple[float, bool]:
        """(utilisation, measured?) for a run of `model`."""
        return (self.measured_util[model], True) if model in self.measured_util else (self.assumed_util, False)

    def seconds(self, model: str, flops: float) -> float:
        return flops / (self.peak * self.util(model)[0])


def split_sizes(cfg: dict) -> tuple[int, int]:
    train, test = SPLIT_SIZES.get(cfg["dataset"], (None, None))
    if train is None:
        raise KeyError(f"no split sizes for dataset '{cfg['dataset']}'")
    return (min(cfg["train_subset"], train) if cfg["train_subset"] else train,
            min(cfg["test_subset"], test) if cfg["test_subset"] else test)


def step_key(cfg: dict) -> tuple:
    return (cfg["method"], cfg["model"], _num_classes(cfg), get_spec(cfg["dataset"]).input_size,
            tuple(_teacher_key(t) for t in cfg["teachers"]), json.dumps(cfg["method_args"], sort_keys=True))


class Costs:
    """Run costs with the FLOP counts and measured rates cached for this process."""

    def __init__(self):
        self._flops: dict[tuple, tuple[dict[str, float], float, str]] = {}
        self._rates: dict[tuple, Rate] = {}

    # -- FLOPs -----------------------------------------------------------------------------------
    def run(self, cfg: dict) -> RunCost:
        from ..engine.trainer import plan_stages

        stage_flops, eval_flops, counted_on = self.step_flops(cfg)
        n_train, n_test = split_sizes(cfg)
        batch = cfg["batch_size"]
        spe = max(1, n_train // batch)
        plans = plan_stages(_StageList(stage_flops), cfg, spe)
        stages = [StageCost(p.stage.name, p.total_steps, p.total_steps * batch, stage_flops[p.stage.name])
                  for p in plans]
        epochs = sum(p.epochs for p in plans) or 1  # an evaluation-only run evaluates once
        flops = sum(s.images * s.flops_per_image for s in stages) + epochs * n_test * eval_flops
        return RunCost(cfg["run_id"], cfg["model"], cfg["method"], batch, epochs, spe * batch, n_test, stages,
                       eval_flops, flops, counted_on)

    def step_flops(self, cfg: dict) -> tuple[dict[str, float], float, str]:
        """({stage: training FLOPs per image}, eval FLOPs per test image, what counted them)."""
        key = step_key(cfg)
        if key not in self._flops:
            self._flops[key] = _count(cfg)
        return self._flops[key]

    # -- time on this machine --------------------------------------------------------------------
    def rate(self, cfg: dict) -> Rate:
        """The training FLOP rate of the run's model on this machine (measured once per model)."""
        key = (cfg["model"], _num_classes(cfg), get_spec(cfg["dataset"]).input_size)
        if key not in self._rates:
            self._rates[key] = _measure(*key)
        rate = self._rates[key]
        if rate.flop_per_s:
            return rate
        measured = [r for r in self._rates.values() if r.flop_per_s and not r.borrowed_from]
        if not measured:  # nothing small enough was timed yet: time the reference model
            ref = ("cifar_resnet56", 100, (3, 32, 32))
            self._rates[ref] = self._rates.get(ref) or _measure(*ref)
            measured = [self._rates[ref]]
        donor = max(measured, key=lambda r: r.batch and r.seconds_per_step * r.flop_per_s / r.batch)
        return Rate(rate.model, donor.flop_per_s, borrowed_from=donor.model)

    def rates(self) -> list[Rate]:
        return list(self._rates.values())


class _StageList:
    """Stands in for a Distiller in `plan_stages`: the stage names in order."""

    def __init__(self, stage_flops: dict[str, float]):
        self._stages = [_Stage(name) for name in stage_flops]

    def stages(self):
        return self._stages


@dataclass(frozen=True)
class _Stage:
    name: str


def _networks(cfg: dict) -> tuple:
    """A fresh distiller for `cfg` (teachers: fresh weights of their architecture, one instance per
    distinct teacher: FLOPs do not depend on the weights) and its number of classes."""
    from ..methods import build_method
    from ..models import create_model

    n = _num_classes(cfg)
    built: dict[tuple, torch.nn.Module] = {}
    teachers = []
    for t in cfg["teachers"]:
        key = _network(t)
        if key not in built:
            built[key] = create_model(*key[:2], in_chans=key[2])
        teachers.append(built[key])
    student = create_model(cfg["model"], n, in_chans=image_channels(cfg))
    return build_method(cfg["method"], student, teachers, n, **cfg["method_args"]), n


def _network(t: dict) -> tuple[str, int, int]:
    """(model, classes, image channels) of a teacher: a run's or a pretrained file's (3-channel)."""
    return (t["pretrained"]["model"], t["pretrained"]["num_classes"], 3) if "pretrained" in t else \
        (t["model"], _num_classes(t), image_channels(t))


def _param_count(cfg: dict) -> int:
    from ..models import create_model
    nets = [(cfg["model"], _num_classes(cfg), image_channels(cfg))] + list(dict.fromkeys(map(_network, cfg["teachers"])))
    with torch.device("meta"):
        return sum(p.numel() for name, n, c in nets for p in create_model(name, n, in_chans=c).parameters())


def _count(cfg: dict) -> tuple[dict[str, float], float, str]:
    input_size = get_spec(cfg["dataset"]).input_size
    if input_size[-1] > 32 or _param_count(cfg) > FAKE_ABOVE_PARAMS:
        try:
            return (*_count_with(cfg, input_size, fake=True), "fake tensors")
        except Exception:  # a method that reads values while it is built (FitNets' probe): count for real
            pass
    return (*_count_with(cfg, input_size, fake=False), "cpu")


class _Counting:
    """For the block: deterministic algorithms, so several teachers run as a plain loop (ParallelForward
    would otherwise time its strategies on the counted batch), and one thread (a batch of 2 gains nothing
    from more, and loses much on a busy machine)."""

    def __enter__(self):
        self.saved = (torch.are_deterministic_algorithms_enabled(),
                      torch.is_deterministic_algorithms_warn_only_enabled(), torch.get_num_threads())
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.use_deterministic_algorithms(self.saved[0], warn_only=self.saved[1])
        torch.set_num_threads(self.saved[2])


def _fake():
    from torch._subclasses.fake_tensor import FakeTensorMode
    return FakeTensorMode(allow_non_fake_inputs=True)


def _count_with(cfg: dict, input_size, fake: bool) -> tuple[dict[str, float], float]:
    from ..methods import StepContext

    with torch.random.fork_rng(devices=[]), _Counting(), (_fake() if fake else nullcontext()):
        distiller, n = _networks(cfg)
        images = torch.randn(FLOP_BATCH, *input_size)
        targets = torch.arange(FLOP_BATCH) % n
        stages = {}
        distiller.train()
        for stage in distiller.stages():
            distiller.set_trainable(stage)

            def step():
                _, losses = distiller(images, targets, StepContext(stage))
                sum(losses.values()).backward()
            stages[stage.name] = count_flops(step) / FLOP_BATCH
        distiller.eval()
        with torch.inference_mode():
            evals = count_flops(lambda: [m(images) for m in distiller.eval_models().values()])
    return stages, evals / FLOP_BATCH


def _plain_step_flops(model: str, num_classes: int, input_size: tuple) -> float:
    """FLOPs per image of a plain training step of `model` (counted on fake tensors)."""
    from ..models import create_model
    with torch.random.fork_rng(devices=[]), _Counting(), _fake():
        net = create_model(model, num_classes, in_chans=input_size[0])
        images, targets = torch.randn(FLOP_BATCH, *input_size), torch.arange(FLOP_BATCH) % num_classes
        return count_flops(lambda: torch.nn.functional.cross_entropy(net(images), targets).backward()) / FLOP_BATCH


def _measure(model: str, num_classes: int, input_size: tuple) -> Rate:
    """Time plain training steps of `model` at a small batch after a warm-up step; the fastest counts."""
    from ..engine.trainer import EngineOptions, fast_device, use_channels_last
    from ..models import create_model

    per_image = _plain_step_flops(model, num_classes, input_size)
    if per_image > MEASURE_MAX_FLOP:
        return Rate(model, 0.0)
    batch = max(FLOP_BATCH, min(MEASURE_BATCH, int(MEASURE_MAX_FLOP // per_image)))
    with torch.random.fork_rng(devices=[]):
        net = create_model(model, num_classes, in_chans=input_size[0])
        images = torch.randn(batch, *input_size)
        targets = torch.arange(batch) % num_classes
        if use_channels_last(EngineOptions(), [net]):
            net, images = net.to(memory_format=torch.channels_last), images.to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if fast_device(torch.device("cpu")) else nullcontext()

        def step():
            with autocast:
                loss = torch.nn.functional.cross_entropy(net(images), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        step()
        times, started = [], time.perf_counter()
        while len(times) < 2 or len(times) < MEASURE_STEPS and time.perf_counter() - started < MEASURE_MAX_S:
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        seconds = min(times)  # on a shared machine the fastest step is the one least slowed by others
    return Rate(model, per_image * batch / seconds, batch, seconds)


def gpu(name: str, util: Optional[float] = None, bench_csv: Path = Path("results/bench/bench.csv")) -> GPU:
    """The GPU called `name` (a substring of its device name, e.g. H100): its peak, and the utilisation
    `make bench` measured on it per model (its `gpu <model>` rows), unless `util` is given."""
    from ..bench import GPU_THROUGHPUT

    peak = peak_bf16(name)
    if peak is None:
        from ..engine.flops import PEAK_BF16
        from ..errors import ConfigError
        raise ConfigError(f"no bf16 peak recorded for GPU '{name}'; use one of "
                          f"{', '.join(k for k, _ in PEAK_BF16)}")
    measured = {}
    models = {case: model for case, model, *_ in GPU_THROUGHPUT}
    if util is None and Path(bench_csv).is_file():
        with open(bench_csv, newline="") as f:
            for row in csv.DictReader(f):
                model = models.get(row["name"])
                if model and name.lower() in row["device"].lower() and row["mfu"] not in ("", "n/a"):
                    measured[model] = float(row["mfu"])
    return GPU(name, peak, measured, util if util is not None else ASSUMED_GPU_UTIL)


def human_seconds(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    for unit, size in (("years", 365.25 * 86400), ("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s / size:.1f} {unit}"
    return f"{s:.2g} s"


__all__ = ["Costs", "RunCost", "StageCost", "Rate", "GPU", "gpu", "split_sizes", "human_seconds"]
