"""torch.distributed glue: who am I, wrap what trains, reduce metrics. A no-op on one process.

Launch with torchrun; the engine reads RANK/WORLD_SIZE/LOCAL_RANK from the environment. The whole
Distiller is wrapped in DistributedDataParallel: its parameters are exactly the student, peers and
adapters (teachers live outside the module tree), so frozen teachers are replicated, never wrapped.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as tdist


def is_distributed() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def rank() -> int:
    return tdist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return tdist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def local_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def init_from_env() -> bool:
    """Join the process group torchrun set up; True when running distributed."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_distributed():
        return is_distributed()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    tdist.init_process_group(backend=backend)
    return True


def wrap(distiller, device):
    """The callable a training step goes through: DDP over the distiller, or the distiller itself."""
    if not is_distributed() or not any(p.requires_grad for p in distiller.parameters()):
        return distiller
    from torch.nn.parallel import DistributedDataParallel as DDP
    ids = [device.index] if device.type == "cuda" else None
    return DDP(distiller, device_ids=ids)


def barrier() -> None:
    if is_distributed():
        tdist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if is_distributed():
        t = t.clone()
        tdist.all_reduce(t)
    return t


def all_reduce_mean(values: dict) -> dict:
    if not is_distributed() or not values:
        return values
    keys = sorted(values)
    stacked = torch.stack([torch.as_tensor(values[k]).float() for k in keys]) / world_size()
    tdist.all_reduce(stacked)
    return dict(zip(keys, stacked))
