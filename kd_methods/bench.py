"""`kd-bench bench`: training-step timings of the engine's fast paths beside a textbook training loop.

Every case is one training step (or one data batch) taken exactly as the engine takes it: CIFAR-shaped
data resident on the device and augmented there in batched tensor ops (`TensorLoader`), bf16 autocast
and channels_last on CUDA, cudnn autotuning, teachers frozen under `torch.inference_mode`, losses summed
on the device with no host sync in the step. Each is set beside a *textbook* step written here the way
RepDistiller and mdistiller train: a `DataLoader` over a uint8 dataset with per-image torchvision
transforms (PIL image, RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize), fp32,
NCHW, the teacher live under `no_grad`, the loss in plain Python and `loss.item()` plus a top-1
accuracy read every step. `ratio_vs_reference` is the reference's ms/step divided by the case's: 2.0
means twice as fast.

Protocol: all cases are built first, then warmed up, then timed in rounds, round-robin (every round
times every case once, in a rotated order), so slow drift of the machine (thermal state, other load)
touches all cases alike. A sample is a block of n consecutive steps (n chosen after warm-up so that a
block lasts about `BLOCK_S`); the CSV gives the median ms/step over the rounds with the quartiles.
On CUDA the block is timed with CUDA events, with `torch.cuda.synchronize` only before and after it.
The GPU throughput cases (ResNet-56, WRN-28-10, ResNeXt-29 16x64d, ResNet-34 at 224 px) report MFU
from a FLOP count of one step (`engine.flops`) and the device's dense bf16 peak; they are skipped on CPU.
"""
from __future__ import annotations

import copy
import csv
import datetime as _dt
import math
import os
import platform
import statistics
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .engine.flops import PEAK_BF16, count_flops, peak_bf16  # noqa: F401  (PEAK_BF16: the table MFU uses)

COLUMNS = ["name", "device", "batch", "ms_per_step", "img_per_s", "ratio_vs_reference", "reference",
           "ms_q1", "ms_q3", "ms_min", "ms_max", "samples", "steps_per_sample", "mfu", "compile_s", "note"]


# Targets of issue #5, reported (never asserted).
GPU_THROUGHPUT = [  # (case, model, batch, image size, target img/s)
    ("gpu resnet56", "cifar_resnet56", 512, 32, 40_000),
    ("gpu wrn28_10", "cifar_wrn_28_10", 256, 32, 10_000),
    ("gpu resnext29_16x64d", "cifar_resnext29_16x64d", 256, 32, 4_000),
    ("gpu resnet34 224px", "torchvision.resnet34", 256, 224, 5_000),
]


# ---------------------------------------------------------------------------------------------------
# Settings and timing
# ---------------------------------------------------------------------------------------------------
@dataclass
class Settings:
    device: torch.device
    quick: bool
    batch: int            # CIFAR batch of the method cases
    warmup: int           # untimed steps per case before the rounds
    rounds: int           # timed samples per case
    block_s: float        # target duration of one sample
    workers: int          # DataLoader workers of the textbook loop
    train_images: int     # size of the synthetic CIFAR-shaped train split
    small: str = "cifar_resnet20"   # student of KD/FitNets/AT/FSP/FT
    mid: str = "cifar_resnet32"     # DML peers
    large: str = "cifar_resnet56"   # teachers; pFEED's student

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def fast(self) -> bool:
        """bf16 autocast in the engine's step: CUDA, or a CPU with native bf16 (`fast_device`)."""
        from .engine.trainer import fast_device
        return fast_device(self.device)

    @classmethod
    def for_device(cls, device: torch.device, quick: bool) -> "Settings":
        cuda = device.type == "cuda"
        if quick:
            return cls(device, True, batch=8, warmup=1, rounds=2, block_s=0.0, workers=0, train_images=256,
                       small="cifar_resnet8", mid="cifar_resnet8", large="cifar_resnet14")
        # Textbook workers: on CPU the step's compute already keeps every core busy, and workers would
        # prepare batches between timed blocks for free, so the data work is done inline (see README).
        return cls(device, False, batch=128 if cuda else 64, warmup=5 if cuda else 2, rounds=9 if cuda else 5,
                   block_s=0.2 if cuda else 0.0, workers=min(8, os.cpu_count() or 1) if cuda else 0,
                   train_images=50_000 if cuda else 10_000)


class Clock:
    """Seconds taken by `n` calls of a step: CUDA events on a GPU (synchronised only around the block),
    `time.perf_counter` on CPU."""

    def __init__(self, device: torch.device):
        self.device = device

    def __call__(self, step: Callable[[], None], n: int) -> float:
        if self.device.type != "cuda":
            t0 = time.perf_counter()
            for _ in range(n):
                step()
            return time.perf_counter() - t0
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(self.device)
        start.record()
        for _ in range(n):
            step()
        end.record()
        torch.cuda.synchronize(self.device)
        return start.elapsed_time(end) / 1000.0


def set_flags(textbook: bool, cuda: bool) -> None:
    """Backend flags of a case. Both set cudnn.benchmark (RepDistiller and mdistiller do); the engine
    also allows TF32 matmuls, the textbook loop keeps PyTorch's default (off)."""
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cuda.matmul.allow_tf32 = not textbook


@dataclass
class Case:
    name: str
    batch: int
    step: Callable[[], None]
    textbook: bool = False
    reference: Optional[str] = None       # the case this one is compared with
    note: str = ""
    compiled: bool = False
    flops: Optional[float] = None         # per step (CUDA throughput cases)
    samples: list[float] = field(default_factory=list)  # seconds per step, one per round
    per_sample: int = 1
    compile_s: Optional[float] = None

    def stats(self) -> dict:
        ms = sorted(1000 * s for s in self.samples)
        q = statistics.quantiles(ms, n=4, method="inclusive") if len(ms) > 1 else [ms[0]] * 3
        return dict(median=statistics.median(ms), q1=q[0], q3=q[2], min=ms[0], max=ms[-1])


# ---------------------------------------------------------------------------------------------------
# The engine's path
# ---------------------------------------------------------------------------------------------------
def forever(loader) -> Iterator[tuple[Tensor, Tensor]]:
    """The loader's batches, epoch after epoch (each epoch a pure function of (seed, epoch))."""
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def sgd(params) -> torch.optim.Optimizer:
    from .engine.optim import build_optimizer
    return build_optimizer(params, dict(name="sgd", lr=0.05, momentum=0.9, nesterov=False, weight_decay=5e-4))


class EngineStep:
    """One step as `engine.trainer._train_epoch` takes it: next device batch, forward under autocast,
    losses summed, zero_grad / backward / optimizer step, the loss added to an on-device total."""

    def __init__(self, distiller, stage_name: Optional[str], loader, settings: Settings, *,
                 channels_last: bool = True, amp: Optional[bool] = None, compile: bool = False):
        from .engine.optim import set_lr
        from .methods import StepContext

        self.distiller = distiller.to(settings.device)
        if channels_last:  # the engine's default
            self.distiller.to(memory_format=torch.channels_last)
        if compile:
            for m in [distiller.student, *distiller.teachers]:
                if m is not None:
                    m.compile()
        stages = {s.name: s for s in distiller.stages()}
        stage = stages[stage_name] if stage_name else next(iter(stages.values()))
        distiller.set_trainable(stage)
        distiller.train()
        self.optimizer = sgd(distiller.parameters_for(stage))
        self.set_lr = set_lr
        self.ctx = StepContext(stage, total_steps=1_000_000)
        use_amp = amp if amp is not None else settings.fast
        self.autocast = (torch.autocast(settings.device.type, dtype=torch.bfloat16) if use_amp else nullcontext())
        self.batches = forever(loader)
        self.total = torch.zeros((), device=settings.device)

    def __call__(self) -> None:
        images, targets = next(self.batches)
        self.set_lr(self.optimizer, 0.05)
        with self.autocast:
            _, losses = self.distiller(images, targets, self.ctx)
        loss = sum(losses.values())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.total += loss.detach().float()


# ---------------------------------------------------------------------------------------------------
# The textbook path
# ---------------------------------------------------------------------------------------------------
class PILDataset(torch.utils.data.Dataset):
    """CIFAR as torchvision's dataset serves it: uint8 HWC arrays, one PIL image per item, transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images = np.ascontiguousarray(images.transpose(0, 2, 3, 1))  # NCHW -> NHWC
        self.labels = labels.astype(np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


class TextbookBatches:
    """`DataLoader(shuffle=True, drop_last=True, num_workers=W)` over `PILDataset` with per-image
    torchvision transforms; batches moved with a blocking `.to(device)` as in `input.cuda()`."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean, std, batch: int, settings: Settings):
        import torchvision.transforms as T

        transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                               T.Normalize(mean, std)])
        self.loader = torch.utils.data.DataLoader(
            PILDataset(images, labels, transform), batch_size=batch, shuffle=True, drop_last=True,
            num_workers=settings.workers, persistent_workers=settings.workers > 0,
            generator=torch.Generator().manual_seed(0))
        self.device = settings.device
        self._it = iter(self.loader)

    def _next(self):
        try:
            return next(self._it)
        except StopIteration:
            self._it = iter(self.loader)
            return next(self._it)

    def __call__(self) -> tuple[Tensor, Tensor]:
        images, targets = self._next()
        return images.to(self.device), targets.to(self.device)


def accuracy(logits: Tensor, targets: Tensor) -> float:
    return (logits.argmax(1) == targets).float().mean().item() * 100


class TextbookStep:
    """A textbook training step: `loss_fn(images, targets) -> (loss, logits)` in fp32, then
    zero_grad / backward / step and the per-step `loss.item()` and accuracy of an AverageMeter loop."""

    def __init__(self, batches: TextbookBatches, modules: list[nn.Module], loss_fn, device: torch.device):
        for m in modules:
            m.to(device).train()
        self.batches, self.loss_fn = batches, loss_fn
        self.optimizer = sgd([p for m in modules for p in m.parameters() if p.requires_grad])
        self.meter = [0.0, 0.0]

    def __call__(self) -> None:
        images, targets = self.batches()
        loss, logits = self.loss_fn(images, targets)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.meter[0] += loss.item()
        self.meter[1] += accuracy(logits, targets)


def cifar_stages(model: nn.Module, x: Tensor) -> tuple[list[Tensor], Tensor]:
    """`model(x, is_feat=True)` of RepDistiller for our CIFAR ResNets: ([stem, stage1, stage2, stage3],
    logits)."""
    x = model.relu(model.bn1(model.conv1(x)))
    feats = [x]
    for layer in (model.layer1, model.layer2, model.layer3):
        x = layer(x)
        feats.append(x)
    return feats, model.forward_head(x)


def frozen(model: nn.Module, device: torch.device) -> nn.Module:
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def kl_soft(student_logits: Tensor, teacher_logits: Tensor, t: float) -> Tensor:
    """RepDistiller's DistillKL: KL(softmax(t/T) || softmax(s/T)) * T^2, batch mean."""
    p_s = F.log_softmax(student_logits / t, dim=1)
    p_t = F.softmax(teacher_logits / t, dim=1)
    return F.kl_div(p_s, p_t, reduction="sum") * t * t / student_logits.shape[0]


def normalized_l1(a: Tensor, b: Tensor) -> Tensor:
    return (F.normalize(a.flatten(1)) - F.normalize(b.flatten(1))).abs().mean()


def gram(f1: Tensor, f2: Tensor) -> Tensor:
    if f1.shape[2] > f2.shape[2]:
        f1 = F.adaptive_max_pool2d(f1, f2.shape[2:])
    n, c1, h, w = f1.shape
    return torch.bmm(f1.flatten(2), f2.flatten(2).transpose(1, 2)) / (h * w)


# ---------------------------------------------------------------------------------------------------
# Building the cases
# ---------------------------------------------------------------------------------------------------
class Builder:
    """Makes the fast and textbook cases over one synthetic CIFAR-shaped set (100 classes)."""

    def __init__(self, settings: Settings):
        from .data import DataConfig, build_data, get_spec

        self.s = settings
        cfg = DataConfig(name="synthetic100", batch_size=settings.batch, train_subset=settings.train_images,
                         test_subset=settings.batch, seed=0)
        self.data = build_data(cfg, settings.device)
        x_train, y_train, _, _ = get_spec("synthetic100").read(cfg)
        self.arrays = (np.asarray(x_train)[:settings.train_images], np.asarray(y_train)[:settings.train_images])
        self.textbook_batches: dict[int, TextbookBatches] = {}
        self.cases: list[Case] = []
        self.skipped: list[str] = []
        self.names: dict[str, str] = {"data": "data pipeline"}  # role -> case name, for the targets

    # -- helpers ---------------------------------------------------------------------------------------
    def textbook(self, batch: int) -> TextbookBatches:
        if batch not in self.textbook_batches:
            self.textbook_batches[batch] = TextbookBatches(*self.arrays, self.data.mean, self.data.std,
                                                           batch, self.s)
        return self.textbook_batches[batch]

    def model(self, name: str) -> nn.Module:
        from .models import create_model
        return create_model(name, num_classes=100)

    def method(self, name: str, student: Optional[str], teachers: list[str], **hparams):
        from .methods import build_method
        return build_method(name, self.model(student) if student else None,
                            [self.model(t) for t in teachers], num_classes=100, **hparams)

    def add_pair(self, name: str, fast: Callable[[], Callable], textbook: Optional[Callable[[], Callable]],
                 note: str = "") -> None:
        """A fast case and its textbook reference; a method that is not registered is skipped."""
        from .registry import UnknownName
        batch = self.s.batch
        try:
            fast_step = fast()
        except (UnknownName, KeyError, ImportError) as err:
            self.skipped.append(f"{name}: skipped ({err})")
            return
        ref = f"{name} [textbook]" if textbook else None
        self.cases.append(Case(name, batch, fast_step, reference=ref, note=note))
        if textbook:
            self.cases.append(Case(ref, batch, textbook(), textbook=True, reference=ref,
                                   note=f"DataLoader, {self.s.workers} workers, per-image transforms, fp32 NCHW"))

    # -- the cases ---------------------------------------------------------------------------------------
    def data_pipeline(self) -> None:
        batches = forever(self.data.train)

        def fast():
            return lambda: next(batches)

        def textbook():
            tb = self.textbook(self.s.batch)
            return lambda: tb()
        self.add_pair(self.names["data"], fast, textbook, note="one batch: index, crop+flip, normalise on device")

    def plain(self, model: str, role: str) -> None:
        name = self.names[f"plain_{role}"] = f"plain {label(model)}"

        def fast():
            return EngineStep(self.method("scratch", model, []), None, self.data.train, self.s)

        def textbook():
            net = self.model(model).to(self.s.device)
            def loss_fn(x, y):
                logits = net(x)
                return F.cross_entropy(logits, y), logits
            return TextbookStep(self.textbook(self.s.batch), [net], loss_fn, self.s.device)
        self.add_pair(name, fast, textbook)
        if self.s.cuda and role == "small":
            step = EngineStep(self.method("scratch", model, []), None, self.data.train, self.s)

            def synced():
                step()
                torch.cuda.current_stream(self.s.device).synchronize()
            self.cases.append(Case(f"{name} (+1 host sync per step)", self.s.batch, synced, reference=name,
                                   note="what a blocking host-to-device copy per batch costs (the data "
                                        "layer's per-batch position copy, fixed)"))

    def layout_variants(self, model: str) -> None:
        """The plain step with each combination of bf16 autocast and channels_last, beside the engine's
        choice for the device: which layout/precision is fastest is measured, not assumed."""
        base = f"plain {label(model)}"
        for amp in (False, True):
            for cl in (False, True):
                if (amp, cl) == (self.s.fast, True):
                    continue  # that is the engine's own row
                if amp and not _autocast_available(self.s.device):
                    continue
                name = f"{base} ({'bf16' if amp else 'fp32'}, {'channels_last' if cl else 'NCHW'})"
                step = EngineStep(self.method("scratch", model, []), None, self.data.train, self.s,
                                  channels_last=cl, amp=amp)
                self.cases.append(Case(name, self.s.batch, step, reference=base,
                                       note="engine step with this precision/layout"))

    def compiled(self, model: str) -> None:
        step = EngineStep(self.method("scratch", model, []), None, self.data.train, self.s, compile=True)
        self.cases.append(Case(f"plain {label(model)} (torch.compile)", self.s.batch, step, compiled=True,
                               reference=f"plain {label(model)}", note="compile time in compile_s"))

    def kd(self) -> None:
        small, large = self.s.small, self.s.large

        def fast():
            return EngineStep(self.method("kd", small, [large]), None, self.data.train, self.s)

        def textbook():
            student = self.model(small)
            teacher = frozen(self.model(large), self.s.device)
            def loss_fn(x, y):
                with torch.no_grad():
                    t = teacher(x)
                s = student(x)
                return F.cross_entropy(s, y) + kl_soft(s, t, 4.0), s
            return TextbookStep(self.textbook(self.s.batch), [student], loss_fn, self.s.device)
        self.names["kd"] = f"kd {label(large)}->{label(small)}"
        self.add_pair(self.names["kd"], fast, textbook)

    def pfeed(self, k: int = 5) -> None:
        large = self.s.large
        name = self.names["pfeed"] = f"pfeed {k}x {label(large)}->{label(large)}"

        def fast():
            return EngineStep(self.method("feed", large, [large] * k), None, self.data.train, self.s)

        def textbook():
            from .methods.feed import NTL
            student = self.model(large)
            teachers = [frozen(self.model(large), self.s.device) for _ in range(k)]
            ntls = [NTL(64, 64) for _ in range(k)]
            def loss_fn(x, y):
                with torch.no_grad():
                    t_feats = [t.forward_features(x) for t in teachers]
                feat = student.forward_features(x)
                logits = student.forward_head(feat)
                feed = sum(normalized_l1(t, ntl(feat)) for t, ntl in zip(t_feats, ntls))
                return F.cross_entropy(logits, y) + 500.0 * feed, logits
            return TextbookStep(self.textbook(self.s.batch), [student, *ntls], loss_fn, self.s.device)
        self.add_pair(name, fast, textbook)

    def teacher_strategies(self, k: int = 5) -> None:
        """pFEED's k teachers alone (inference), with each multi-network strategy."""
        from .engine.multi import ParallelForward
        from .models import FeatureTap

        dev = self.s.device
        large = label(self.s.large)
        teachers = [frozen(self.model(self.s.large), dev) for _ in range(k)]
        for t in teachers:
            t.to(memory_format=torch.channels_last)
        taps = [FeatureTap(t, {"final": "layer3"}) for t in teachers]
        pf = ParallelForward(taps, strategy="loop")
        x = next(iter(self.data.train))[0]
        autocast = torch.autocast(dev.type, dtype=torch.bfloat16) if self.s.fast else nullcontext()

        def runner(strategy):
            def step():
                with autocast:
                    pf.run(strategy, x)
            return step
        loop_name = f"teachers {k}x {large} (loop)"
        for strategy in pf.available(dev):
            name = f"teachers {k}x {large} ({strategy})"
            self.cases.append(Case(name, self.s.batch, runner(strategy), reference=loop_name,
                                   note="teacher logits+final features, inference_mode"))
        self.parallel = ParallelForward(taps)  # what "auto" picks, recorded for the report
        with autocast:
            self.parallel(x)

    def dml(self, k: int) -> None:
        mid = self.s.mid
        name = self.names[f"dml{k}"] = f"dml {k}x {label(mid)}"

        def fast():
            return EngineStep(self.method("dml", mid, [], peers=[mid] * (k - 1)), None, self.data.train, self.s)

        def textbook():
            nets = [self.model(mid) for _ in range(k)]
            optimizers = [sgd(n.parameters()) for n in nets]
            batches = self.textbook(self.s.batch)
            for n in nets:
                n.to(self.s.device).train()
            meter = [0.0]

            def step():  # the common DML loop: one forward, then each net's loss, backward and update
                x, y = batches()
                outs = [n(x) for n in nets]
                for i, (out, opt) in enumerate(zip(nets, optimizers)):
                    logits = outs[i]
                    mimic = sum(kl_soft(logits, outs[j].detach(), 1.0) for j in range(k) if j != i) / (k - 1)
                    loss = F.cross_entropy(logits, y) + mimic
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    meter[0] += loss.item() + accuracy(logits, y)
            return step
        self.add_pair(name, fast, textbook)

    def dml_vmap(self, k: int) -> None:
        """DML's step with the k peers run as one vmapped pass over stacked weights (torch.func)."""
        from .engine.multi import make_template, vmap_forward_train

        mid = self.s.mid
        fast = EngineStep(self.method("dml", mid, [], peers=[mid] * (k - 1)), None, self.data.train, self.s)
        distiller = fast.distiller
        template = make_template(distiller.student)

        def forward_train(images, targets, ctx):
            all_logits = vmap_forward_train(distiller.networks, images, template)
            return all_logits[0], distiller.cohort_losses(all_logits, targets)
        distiller.forward_train = forward_train
        name = self.names[f"dml{k}_vmap"] = f"dml {k}x {label(mid)} (vmap peers)"
        self.cases.append(Case(name, self.s.batch, fast, reference=f"dml {k}x {label(mid)}",
                               note="peers stacked with torch.func" + (
                                   "; fp32: torch.func's vmap does not apply autocast" if self.s.fast else "")))

    def feature_method(self, name: str, method: str, stage: str, loss: Callable,
                       adapters: Callable[[nn.Module], list[nn.Module]]) -> None:
        """FitNets / AT / FSP / FT: ResNet-56 teacher -> ResNet-20 student, one step of `stage`.

        The textbook step runs its own student and teacher (stage outputs as RepDistiller's `is_feat`),
        the method's adapter modules (`adapters(distiller)`: regressor, translator, ...), and
        `loss(student_feats, teacher_feats, logits, targets, distiller)` written out in plain Python."""
        small, large = self.s.small, self.s.large

        def fast():
            return EngineStep(self.method(method, small, [large]), stage, self.data.train, self.s)

        def textbook():
            twin = self.method(method, small, [large]).to(self.s.device)
            student = self.model(small)
            teacher = frozen(self.model(large), self.s.device)

            def loss_fn(x, y):
                with torch.no_grad():
                    t_feats, _ = cifar_stages(teacher, x)
                s_feats, logits = cifar_stages(student, x)
                return loss(s_feats, t_feats, logits, y, twin), logits
            return TextbookStep(self.textbook(self.s.batch), [student, *adapters(twin)], loss_fn, self.s.device)
        self.add_pair(f"{name} {label(large)}->{label(small)}", fast, textbook)

    def feature_methods(self) -> None:
        def fitnets_hint(s, t, logits, y, d):  # guided stage2 <- hint stage2 through the regressor
            r = d.regressors["hint0"](s[2])
            return 0.5 * (r - t[2]).pow(2).flatten(1).sum(1).mean()

        def at(s, t, logits, y, d):
            def am(f):
                return F.normalize(f.pow(2).mean(1).flatten(1))
            return F.cross_entropy(logits, y) + 500.0 * sum((am(a) - am(b)).pow(2).mean()
                                                            for a, b in zip(s[1:], t[1:]))

        def fsp(s, t, logits, y, d):
            return sum((gram(s[i], s[i + 1]) - gram(t[i], t[i + 1])).pow(2).sum((1, 2)).mean()
                       for i in range(3))

        def ft(s, t, logits, y, d):
            with torch.no_grad():
                factor = d.paraphrasers[0].encoder(t[3])
            return F.cross_entropy(logits, y) + 500.0 * normalized_l1(factor, d.translators[0](s[3]))

        self.feature_method("fitnets hint", "fitnets", "hint", fitnets_hint, lambda d: [d.regressors])
        self.feature_method("at", "at", "train", at, lambda d: [])
        self.feature_method("fsp stage1", "fsp", "fsp", fsp, lambda d: [])
        self.feature_method("ft", "ft", "train", ft, lambda d: [d.translators])

    def gpu_throughput(self) -> None:
        from .data import DataConfig, build_data
        for name, model, batch, size, _ in GPU_THROUGHPUT:
            if size == 32:
                cfg = DataConfig(name="synthetic100", batch_size=batch, train_subset=self.s.train_images,
                                 test_subset=batch, seed=0)
            else:
                cfg = DataConfig(name="synthetic_imagenet", batch_size=batch, seed=0)
            data = build_data(cfg, self.s.device)
            from .models import create_model
            from .methods import build_method
            distiller = build_method("scratch", create_model(model, num_classes=data.num_classes), [],
                                     num_classes=data.num_classes)
            step = EngineStep(distiller, None, data.train, self.s)
            case = Case(name, batch, step, note=f"{model}, {size}px, bf16 + channels_last")
            case.flops = count_flops(step)
            self.cases.append(case)


def label(model: str) -> str:
    return model.replace("cifar_", "").replace("torchvision.", "")


def _autocast_available(device: torch.device) -> bool:
    if device.type == "cuda":
        return True
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.ones(2, 2) @ torch.ones(2, 2)
        return True
    except RuntimeError:
        return False


def peak_flops(device: torch.device) -> Optional[float]:
    return peak_bf16(torch.cuda.get_device_name(device)) if device.type == "cuda" else None


# ---------------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------------
def run_cases(cases: list[Case], settings: Settings, builder: Builder, log) -> None:
    clock = Clock(settings.device)
    for case in cases:
        set_flags(case.textbook, settings.cuda)
        t0 = time.perf_counter()
        case.step()
        if settings.cuda:
            torch.cuda.synchronize(settings.device)
        first = time.perf_counter() - t0
        warm = clock(case.step, max(1, settings.warmup - 1)) / max(1, settings.warmup - 1)
        if case.compiled:
            case.compile_s = max(0.0, first - warm)
        case.per_sample = max(1, min(100, math.ceil(settings.block_s / max(warm, 1e-6))))
    for r in range(settings.rounds):
        log(f"  round {r + 1}/{settings.rounds}")
        order = cases[r % len(cases):] + cases[:r % len(cases)]
        for case in order:
            set_flags(case.textbook, settings.cuda)
            case.samples.append(clock(case.step, case.per_sample) / case.per_sample)


def rows(cases: list[Case], settings: Settings) -> list[dict]:
    by_name = {c.name: c for c in cases}
    peak = peak_flops(settings.device)
    device = describe_device(settings.device)
    out = []
    for c in cases:
        st = c.stats()
        ref = by_name.get(c.reference) if c.reference else None
        ratio = ref.stats()["median"] / st["median"] if ref else None
        sec = st["median"] / 1000
        mfu = c.flops / sec / peak if (c.flops and peak) else None
        out.append(dict(name=c.name, device=device, batch=c.batch, ms_per_step=round(st["median"], 3),
                        img_per_s=round(c.batch / sec, 1), ratio_vs_reference=_fmt(ratio, 3),
                        reference=c.reference or "", ms_q1=round(st["q1"], 3), ms_q3=round(st["q3"], 3),
                        ms_min=round(st["min"], 3), ms_max=round(st["max"], 3), samples=len(c.samples),
                        steps_per_sample=c.per_sample, mfu=_fmt(mfu, 4) if settings.cuda else "n/a",
                        compile_s=_fmt(c.compile_s, 1), note=c.note))
    return out


def _fmt(x: Optional[float], digits: int) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def main(device: str = "auto", out: Path = Path("results/bench"), quick: bool = False,
         compile: Optional[bool] = None) -> int:
    """Build, time and report every case; `compile`: add a torch.compile case (default: on CUDA only,
    where its compile time is a small part of the bench; on 2 CPU cores it takes minutes)."""
    from .engine.trainer import pick_device

    dev = pick_device(device)
    settings = Settings.for_device(dev, quick)
    out = Path(out)
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    load_before = _loadavg()
    started = time.time()
    log(f"kd-bench bench on {describe_device(dev)}{' (quick)' if quick else ''}: building cases")
    torch.manual_seed(0)
    b = Builder(settings)
    b.data_pipeline()
    b.plain(settings.small, "small")
    b.plain(settings.large, "large")
    if settings.mid in (settings.small, settings.large):
        b.names["plain_mid"] = b.names["plain_small" if settings.mid == settings.small else "plain_large"]
    else:
        b.plain(settings.mid, "mid")
    b.layout_variants(settings.large)
    b.kd()
    b.pfeed()
    b.teacher_strategies()
    for k in (2, 4):
        b.dml(k)
        b.dml_vmap(k)
    b.feature_methods()
    if compile if compile is not None else (settings.cuda and not quick):
        b.compiled(settings.large if settings.cuda else settings.small)
    else:
        b.skipped.append("torch.compile case: not requested (`kd-bench bench --compile`)")
    if settings.cuda:
        b.gpu_throughput()
    else:
        b.skipped.append("GPU throughput cases (ResNet-56 b512, WRN-28-10, ResNeXt-29 16x64d, ResNet-34 224px): "
                         "skipped, no CUDA device")
        b.skipped.append("k = 1, 2, 4 ResNet-56 runs packed on one GPU (runs per hour): skipped, no CUDA device")
    for line in b.skipped:
        log("  " + line)
    log(f"  {len(b.cases)} cases; warm-up {settings.warmup} steps each, then {settings.rounds} round-robin rounds")
    run_cases(b.cases, settings, b, log)
    table = rows(b.cases, settings)
    if settings.cuda:  # after the timed cases: the packed processes need the whole GPU
        from .packing import measure as measure_packing
        log("  k = 1, 2, 4 ResNet-56 runs packed on one GPU")
        b.packed = measure_packing(dev, seconds=5.0 if quick else 20.0, warmup=3 if quick else 10)
        table += packing_rows(b.packed, describe_device(dev))
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "bench.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(table)
    readme = render_readme(table, settings, b, load_before, _loadavg(), time.time() - started)
    (out / "README.md").write_text(readme)
    for r in table:
        log(f"  {r['name']:<44} {r['ms_per_step']:>10.2f} ms  {r['img_per_s']:>10.1f} img/s  "
            f"x{r['ratio_vs_reference'] or '-'}")
    log(f"wrote {out / 'bench.csv'} and {out / 'README.md'}")
    return 0


def _loadavg() -> Optional[tuple[float, float, float]]:
    try:
        return os.getloadavg()
    except OSError:
        return None


# ---------------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------------
def targets(table: list[dict], settings: Settings, names: dict[str, str]) -> list[tuple[str, str, Optional[bool]]]:
    """(target, measured, met) for the targets of issue #5; `names` maps roles to case names."""
    by_name = {r["name"]: r for r in table}

    def ms(role: str) -> Optional[float]:
        r = by_name.get(names.get(role, ""))
        return r["ms_per_step"] if r else None

    out: list[tuple[str, str, Optional[bool]]] = []

    def add(label: str, value: Optional[float], ok: Callable[[float], bool]):
        out.append((label, "not measured", None) if value is None else (label, f"{value:.2f}x", ok(value)))

    def per(a: Optional[float], b: Optional[float], k: int = 1) -> Optional[float]:
        return a / (k * b) if a and b else None

    small, mid, large = (label(m) for m in (settings.small, settings.mid, settings.large))
    kd = by_name.get(names.get("kd", ""))
    kd_ratio = float(kd["ratio_vs_reference"]) if kd and kd["ratio_vs_reference"] else None
    if settings.cuda:
        add(f"KD ({large} -> {small}) epoch >= 5x faster than the textbook loop (step ratio x steps)",
            kd_ratio, lambda v: v >= 5)
    else:
        add(f"KD ({large} -> {small}) step >= 1.25x faster than the textbook loop", kd_ratio, lambda v: v >= 1.25)
        out.append(("KD epoch >= 5x faster than the textbook loop on a GPU", "skipped (no CUDA device)", None))
    add(f"pFEED step (5 {large} teachers) <= 2.0 x a plain {large} step (ratio of times)",
        per(ms("pfeed"), ms("plain_large")), lambda v: v <= 2.0)
    teachers = by_name.get(f"teachers 5x {large} (loop)")
    if teachers and ms("plain_large"):  # why the 2.0 target is out of reach without caching teacher outputs
        floor = 1 + teachers["ms_per_step"] / ms("plain_large")
        out.append((f"floor of that ratio: (plain step + the 5 teachers' forward alone) / plain step; a forward "
                    f"is ~1/3 of a training step's FLOPs, so 5 teachers add ~5/3", f"{floor:.2f}x", None))
    for k in (2, 4):
        add(f"DML with {k} {mid} <= 1.05 x {k} plain {mid} steps (ratio of times)",
            per(ms(f"dml{k}"), ms("plain_mid"), k), lambda v: v <= 1.05)
        add(f"DML with {k} {mid}, vmap peers <= 1.05 x {k} plain {mid} steps (ratio of times)",
            per(ms(f"dml{k}_vmap"), ms("plain_mid"), k), lambda v: v <= 1.05)
    add(f"data pipeline >= 3x faster than a training step (plain {small} step / data batch)",
        per(ms("plain_small"), ms("data")), lambda v: v >= 3)
    for name, model, batch, size, goal in GPU_THROUGHPUT:
        r = by_name.get(name)
        text = f"{label(model)} training at batch {batch} ({size}px) >= {goal:,} img/s"
        if r is None:
            out.append((text, "skipped (no CUDA device)", None))
        else:
            mfu = f", MFU {float(r['mfu']):.1%}" if r["mfu"] not in ("", "n/a") else ", MFU n/a"
            out.append((text, f"{r['img_per_s']:,.0f} img/s{mfu}", r["img_per_s"] >= goal))
    return out


def packing_section(packed: list[dict]) -> str:
    if not packed:
        return ""
    body = [[r["k"], f"{r['img_per_s']:,.0f}", f"{r['runs_per_hour']:.2f}", f"{r['vs_one']:.2f}x"] for r in packed]
    return f"""
## Several runs on one GPU

k processes each train {label(packed[0]['model'])} (batch {packed[0]['batch']}, the engine's step) on this GPU at
once, as `kd-bench reproduce --executor ray --gpus-per-run 1/k` places them; each counts its steps in
the same window. Runs per hour: all k processes' steps per second / the steps of one run (200 epochs of
50,000 images, FEED's protocol). `kd_methods/packing.py`.

{_md_table(["k runs on one GPU", "img/s (all k)", "runs/hour", "vs one run"], body)}
"""


def _md_table(header: list[str], body: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def packing_rows(packed: list[dict], device: str) -> list[dict]:
    """bench.csv rows of `packing.measure`: ms/step is one process's, img/s all k processes' together."""
    return [dict(name=f"pack {r['k']}x {label(r['model'])}", device=device, batch=r["batch"],
                 ms_per_step=round(1000 * r["k"] / r["steps_per_s"], 3), img_per_s=round(r["img_per_s"], 1),
                 ratio_vs_reference=_fmt(r["vs_one"], 3), reference=f"pack 1x {label(r['model'])}",
                 ms_q1="", ms_q3="", ms_min="", ms_max="", samples=r["k"], steps_per_sample="", mfu="",
                 compile_s="", note=f"{r['k']} runs in {r['k']} processes on one GPU: "
                                    f"{r['runs_per_hour']:.2f} runs/hour (200 epochs of CIFAR at batch {r['batch']})")
            for r in packed]


def render_readme(table: list[dict], settings: Settings, builder: Builder, load_before, load_after,
                  wall_s: float) -> str:
    import torchvision

    from .runs.store import cpu_model

    dev = settings.device
    hw = [f"- CPU: {cpu_model()}, {os.cpu_count()} logical cores, torch uses {torch.get_num_threads()} threads",
          f"- GPU: {torch.cuda.get_device_name(dev)}" if settings.cuda else "- GPU: none (CUDA not available)",
          f"- Python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"{platform.system()} {platform.release()}",
          f"- Date: {_dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}; the bench took "
          f"{wall_s / 60:.1f} min",
          ]
    if load_before is not None:
        hw.append(f"- Load average (1/5/15 min) before: {'/'.join(f'{x:.2f}' for x in load_before)}, after: "
                  f"{'/'.join(f'{x:.2f}' for x in load_after)}")
    results = _md_table(
        ["case", "batch", "ms/step (median)", "IQR ms", "img/s", "x vs reference", "reference", "MFU",
         "compile s"],
        [[r["name"], r["batch"], f"{r['ms_per_step']:.2f}", f"{r['ms_q1']:.2f}-{r['ms_q3']:.2f}",
          f"{r['img_per_s']:.0f}", r["ratio_vs_reference"] or "-", r["reference"] or "-", r["mfu"] or "-",
          r["compile_s"] or "-"] for r in table])
    goals = _md_table(["target (reported, not asserted)", "measured", "met"],
                      [[t, v, "-" if ok is None else ("yes" if ok else "no")]
                       for t, v, ok in targets(table, settings, builder.names)])
    pf = getattr(builder, "parallel", None)
    strategy = ""
    if pf is not None and pf.choices:
        (key, choice), = list(pf.choices.items())[:1]
        timing = pf.timings.get(key, {})
        measured = ", ".join(f"{k} {1000 * v:.1f} ms" for k, v in timing.items())
        how = (f"its own one-off measurement: {measured}" if timing else
               "without measuring: on a CPU only the loop can win, as the rows above show")
        strategy = (f"`ParallelForward(strategy=\"auto\")` on this device picked **{choice}** for 5 "
                    f"{label(settings.large)} teachers at batch {key[0][0]} ({how}).")
    skipped = "\n".join(f"- {line}" for line in builder.skipped) or "- none"
    cuda_note = ("CUDA: each sample is timed with CUDA events, with `torch.cuda.synchronize` only before and "
                 "after the block of steps." if settings.cuda else
                 "CPU: each sample is timed with `time.perf_counter`. These are honest measurements of this "
                 "machine, a small shared virtual machine; the absolute numbers say little about a "
                 "workstation, the ratios (taken in one process, interleaved) are what the bench is for.")
    workers = ("" if settings.cuda else
               "On CPU the textbook loader has no worker processes: the step already keeps every core busy, "
               "and workers would prepare batches between the timed blocks of other cases without being "
               "charged for them. The per-image transforms therefore run inline, once per batch.")
    return f"""# `make bench`: the engine's training step beside a textbook loop

Generated by `kd-bench bench{' --quick' if settings.quick else ''}` (`kd_methods/bench.py`); do not edit by hand.

## Hardware

{chr(10).join(hw)}

## How it was measured

- Every case is one training step (the data pipeline case: one batch) on a synthetic CIFAR-shaped set
  (100 classes, {settings.train_images:,} train images, uint8), batch {settings.batch} for the method cases.
- Fast path = the engine's step (`kd_methods.engine.trainer`): the data on the device as uint8, shuffled,
  cropped, flipped and normalised in batched tensor ops; {'bf16 autocast and channels_last' if settings.fast
  else 'fp32 channels_last (bf16 autocast needs CUDA or a CPU with native bf16)'}; cudnn autotuning;
  teachers frozen under `torch.inference_mode`; the loss accumulated on the device, no host sync per step.
- Textbook reference = the RepDistiller / mdistiller loop written in `bench.py`: a `DataLoader`
  ({settings.workers} workers) over a uint8 dataset giving PIL images to per-image torchvision transforms
  (`RandomCrop(32, padding=4)`, `RandomHorizontalFlip`, `ToTensor`, `Normalize`), fp32, NCHW, a blocking
  `.to(device)`, the teacher live under `no_grad`, the loss in plain Python, `loss.item()` and a top-1
  accuracy read every step (the AverageMeter pattern). Same models, same optimiser (SGD, momentum 0.9).
  {workers}
- Protocol: all cases are built, each is warmed up ({settings.warmup} steps), then {settings.rounds} rounds
  time every case once, round-robin with a rotating start, so drift of the machine (other processes,
  clocks) falls on all cases alike. A sample is a block of n steps (n chosen after warm-up so that a block
  lasts at least {settings.block_s:.2f} s); the table gives the median over the rounds and the interquartile
  range. `x vs reference` = reference ms/step / case ms/step (2.0 = twice as fast).
- {cuda_note}
- MFU (CUDA only) = FLOPs of one step counted with `torch.utils.flop_counter`'s formulas
  (`kd_methods.engine.flops`, with the weight gradient of grouped convolutions corrected; convolutions
  and matmuls, forward and backward) / step time / the device's dense bf16 peak from a small table
  (e.g. H100 SXM 989 TFLOP/s). `compile s` = first call of a `torch.compile`d step minus a warm step.

## Targets

{goals}

## Results

{results}

## Several teachers and peers

Rows `teachers 5x ... (strategy)` time pFEED's five frozen teachers alone (logits and final feature maps)
with each strategy of `kd_methods.engine.multi.ParallelForward`: a Python loop, one `torch.func.vmap` of
`functional_call` over stacked weights, and CUDA streams (CUDA only). Rows `dml Kx ... (vmap peers)`
run DML's K trainable peers as one vmapped pass (`vmap_forward_train`: the weights are stacked with
`torch.stack` each step, so gradients reach every peer's own parameters; BatchNorm statistics are
written back). The DML method itself still runs its peers in a loop: choosing between the two needs a
measurement during training (the peers' BatchNorm statistics change with every extra forward pass)
and, on CUDA, a bf16 path for the vmapped peers, since torch.func's vmap does not apply autocast.
{strategy}
{packing_section(getattr(builder, "packed", []))}
Skipped here:

{skipped}

## Speed problems found in the engine and the data layer

- `TensorLoader` copied each batch's positions to the device with a blocking `.to(device)`. On CUDA a
  blocking host-to-device copy synchronises the stream, so the host waited for the GPU at every step and
  could not queue the next step's kernels while the current one ran. It now copies the epoch's positions
  once per epoch. CPU runs are unaffected (the copy was a no-op there), so this machine cannot show the
  gain; on CUDA the row `... (+1 host sync per step)` puts one stream synchronisation back into the
  plain step and measures what the old behaviour cost, in the same run.
- Several teachers used to run one after the other. `Distiller.run_teachers` now hands two or more to
  `ParallelForward` (strategy "auto": measured once per input shape, a loop when deterministic algorithms
  are requested), so pFEED and the multi-teacher KD / AT / FT / L1 get the fastest of the three.
  torch.func's vmap does not apply autocast, so under autocast the stacked weights are kept in the
  autocast dtype and the input is cast: same precision as the loop, and no per-step weight casts.

## Teacher-output caching: not implemented

An epoch's batches are a pure function of (seed, epoch), so teacher outputs could be cached per
(teacher set, data config, seed, epoch, batch index). It would only pay when the same teachers see the
same seed's batches twice, and the paper protocols never do that: every run of a table has its own seed
or its own teachers, and a resumed run repeats at most one epoch. What the methods need is also large:
logits are 10 MB per teacher and CIFAR epoch in bf16 (2 GB for 200 epochs), but FEED, FT and AT need
feature maps (0.4 GB per teacher and epoch for ResNet-56's final map, 2.9 GB for AT's three stage
maps), so a cache for FEED Table 2 would hold 0.4 TB (pFEED) to 2.9 TB (5xAT) for a hit rate near
zero. Running the teachers under inference_mode, in bf16 and batched across teachers is the cheaper way
to the same end.
"""
