"""torch.distributed glue: who am I, wrap what trains, reduce metrics. A no-op on one process.

Launch with torchrun (one node or several); the engine reads RANK/WORLD_SIZE/LOCAL_RANK from the
environment and joins the process group (NCCL on GPUs, gloo on CPUs). The whole Distiller is wrapped in
DistributedDataParallel: its parameters are exactly the student, peers and adapters (teachers live outside
the module tree), so frozen teachers are replicated on every rank, never wrapped.

DDP registers the parameters that require grad when it is built, so the engine builds a new wrapper for
every stage, after `set_trainable` (and, for a stage that updates its groups in turn, one per update, each
built while only that update's groups require grad). Within a stage a method's graph is fixed (methods branch on the stage
only), so the wrapper is built with `static_graph=True`: parameters a stage's losses never reach (the
classifier during FSP's stage 1) keep a None gradient, exactly as on one process, without the per-step
graph search of `find_unused_parameters`. DDP decides what is used from what the wrapped forward returns,
so the wrapped step returns the logits detached: only the losses lead back to parameters.
"""
from __future__ import annotations

import os
import re

import torch
import torch.distributed as tdist
from torch import nn


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


def init_from_env(device: str = "auto") -> bool:
    """Join the process group torchrun set up; True when running distributed. NCCL when the command
    computes on GPUs, gloo on CPUs (`--device cpu` on a GPU node included: NCCL takes CUDA tensors only)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_distributed():
        return is_distributed()
    backend = "nccl" if torch.cuda.is_available() and not str(device).startswith("cpu") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    tdist.init_process_group(backend=backend)
    return True


def shutdown() -> None:
    """Leave the process group (at the end of a command)."""
    if is_distributed():
        tdist.destroy_process_group()


class _TrainStep(nn.Module):
    """`distiller(images, targets, ctx)` with the logits detached: what DDP wraps."""

    def __init__(self, distiller: nn.Module):
        super().__init__()
        self.distiller = distiller

    def forward(self, images, targets, ctx):
        logits, losses = self.distiller(images, targets, ctx)
        return (None if logits is None else logits.detach()), losses


def wrap(distiller: nn.Module, device: torch.device) -> nn.Module:
    """The callable a training step goes through, `(images, targets, ctx) -> (logits, losses)`: DDP over
    the distiller, or the distiller itself on one process.

    Call it once per stage, after `set_trainable`: it syncs the parameters from rank 0 and averages the
    gradients of exactly the parameters that require grad at this moment.
    """
    if not is_distributed() or not any(p.requires_grad for p in distiller.parameters()):
        return distiller
    from torch.nn.parallel import DistributedDataParallel as DDP
    ids = None
    if device.type == "cuda":  # plain "cuda" is this rank's GPU: init_from_env selected it
        ids = [torch.cuda.current_device() if device.index is None else device.index]
    return DDP(_TrainStep(distiller), device_ids=ids, static_graph=True)


def broadcast_buffers(module: nn.Module) -> None:
    """Give every rank rank 0's buffers (batch-norm running statistics).

    During training each rank updates its running statistics from its own shard of the batch; before an
    evaluation this makes every rank evaluate the very model rank 0 checkpoints.
    """
    if is_distributed():
        for b in module.buffers():
            tdist.broadcast(b, src=0)


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


# What gloo, NCCL and the TCP store say when another process of the job has gone away.
_PEER_LOST = re.compile(r"connection (closed|reset|refused)|broken pipe|timed out|nccl error|"
                        r"communicator was aborted|remote process exited|collective operation timeout",
                        re.IGNORECASE)


def is_peer_failure(err: BaseException) -> bool:
    """True for the error a collective raises when another rank died or stopped answering."""
    if isinstance(err, tdist.DistError):
        return True
    return isinstance(err, RuntimeError) and bool(_PEER_LOST.search(str(err)))


def peer_failure_message(err: BaseException) -> str:
    """One line for the rank that survived: who it is, which rank is the likely casualty, what to do."""
    me, n = rank(), world_size()
    if n == 2:
        lost = f"rank {1 - me} stopped"
    else:
        lost = "another rank stopped (torchrun's summary names it)"
    first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
    return (f"rank {me} of {n}: {lost}, so this rank cannot continue ({first}); the last checkpoint is "
            f"kept: fix the cause and run the same torchrun command again to resume")
