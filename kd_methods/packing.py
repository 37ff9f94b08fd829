"""Several training runs on one GPU: the throughput of k runs packed together, in runs per hour.

One CIFAR ResNet-56 run leaves most of a modern GPU idle, so `--executor ray --gpus-per-run 0.25` puts
four runs on one GPU. Whether that pays is measured here: `measure(device, ks)` starts k processes on one
device (as Ray would: separate processes, one CUDA context each), each training a model on CIFAR-shaped
data exactly as the engine's step does (`bench.EngineStep`: data on the device, bf16 autocast where the
engine uses it, channels_last). Each warms up, all start together (a barrier), and each counts the steps
it completes in the same window of `seconds`. Runs per hour = the k processes' steps per second / the
steps of one run (FEED's ResNet-56 protocol: 200 epochs of 50,000 images at batch 128). `make bench`
runs it whenever CUDA is present; on a CPU it runs only in the tests (the processes share the cores).
"""
from __future__ import annotations

import multiprocessing as mp
import queue
import time

import torch

STEPS_PER_RUN = 200 * (50_000 // 128)  # FEED's CIFAR-100 protocol for ResNet-56: 200 epochs, batch 128


def _worker(device: str, model: str, batch: int, train_images: int, warmup: int, seconds: float,
            threads: int, barrier, results) -> None:
    from .bench import EngineStep, Settings
    from .data import DataConfig, build_data
    from .methods import build_method
    from .models import create_model

    torch.set_num_threads(threads)
    dev = torch.device(device)
    settings = Settings.for_device(dev, quick=True)
    data = build_data(DataConfig(name="synthetic100", batch_size=batch, train_subset=train_images,
                                 test_subset=batch, seed=0), dev)
    step = EngineStep(build_method("scratch", create_model(model, num_classes=data.num_classes), [],
                                   num_classes=data.num_classes), None, data.train, settings)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
    for _ in range(warmup):
        step()
    sync()
    barrier.wait()
    start = time.perf_counter()
    steps = 0
    while time.perf_counter() - start < seconds:
        step()
        steps += 1
    sync()
    results.put((steps, time.perf_counter() - start))


def measure(device: torch.device, ks=(1, 2, 4), model: str = "cifar_resnet56", batch: int = 128,
            seconds: float = 20.0, warmup: int = 10, train_images: int = 10_000, threads: int = 1) -> list[dict]:
    """One row per k: k runs of `model` packed on `device`, their images/s together and runs per hour."""
    ctx = mp.get_context("spawn")  # CUDA cannot be forked
    rows = []
    for k in ks:
        barrier, results = ctx.Barrier(k), ctx.Queue()
        procs = [ctx.Process(target=_worker, args=(str(device), model, batch, train_images, warmup, seconds,
                                                   threads, barrier, results)) for _ in range(k)]
        for p in procs:
            p.start()
        outs = []
        while len(outs) < k:
            try:
                outs.append(results.get(timeout=1.0))
            except queue.Empty:
                dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    for p in procs:
                        p.kill()
                    raise RuntimeError(f"a packed training process exited with code {dead[0]}")
        for p in procs:
            p.join()
        steps_per_s = sum(steps / elapsed for steps, elapsed in outs)
        rows.append(dict(k=k, model=model, batch=batch, steps_per_s=steps_per_s, img_per_s=steps_per_s * batch,
                         runs_per_hour=steps_per_s * 3600 / STEPS_PER_RUN))
    base = rows[0]["runs_per_hour"] if rows else 0
    for r in rows:
        r["vs_one"] = r["runs_per_hour"] / base if base else None
    return rows
