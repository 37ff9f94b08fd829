"""Several networks on one batch: pFEED's and multi-teacher KD/AT/FT's teachers, DML's peers.

Three ways to run N networks on the same input, all giving the same outputs:

- "loop":    one network after the other (N Python forward passes, N kernels per layer).
- "vmap":    the N networks' parameters and buffers stacked into (N, ...) tensors and one forward pass of
             `torch.func.vmap(functional_call)` over them: every layer becomes one batched kernel (a
             grouped convolution, a batched matmul). Needs networks of one architecture.
- "streams": the loop with each network on its own CUDA stream, so the kernels of different networks
             can overlap on the GPU (CUDA only).

Which is fastest depends on the device, the networks and the batch size, so `ParallelForward` with
strategy "auto" measures every strategy that can win on the device on the first batch of each input shape
and keeps the fastest, as `cudnn.benchmark` does for convolution algorithms. The measurement synchronises
the device a few times, once per shape and set of networks in the process: a later run with networks of
the same architectures and the same input (a table's next cell) reuses the choice. On a CPU the loop is
taken without measuring: there `kd-bench bench` found vmap slower (0.71x the loop for five ResNet-56
teachers at batch 64, results/bench) and streams do not exist, and the measurement itself costs eight
forward passes of every network, more than a smoke run's whole training.

`ParallelForward` is for frozen networks (teachers: eval mode, run under `torch.inference_mode`). DML's
peers train; `vmap_forward_train` runs trainable networks of one architecture as one vmapped pass whose
gradients reach each network's own parameters (see its docstring). `kd-bench bench` measures both.
"""
from __future__ import annotations

import copy
import time
import warnings
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.utils._pytree import tree_flatten

from ..models import FeatureTap

STRATEGIES = ("loop", "vmap", "streams")
# (networks' architectures, input signature) -> the strategy "auto" measured fastest, for the process.
_MEASURED: dict[tuple, str] = {}


def _module_of(runner) -> nn.Module:
    return runner.model if isinstance(runner, FeatureTap) else runner


def signature(m: nn.Module) -> tuple:
    """A network's architecture: its class and its parameters' and buffers' names, shapes and dtypes."""
    return (type(m), tuple((n, tuple(t.shape), t.dtype) for n, t in m.named_parameters()),
            tuple((n, tuple(t.shape), t.dtype) for n, t in m.named_buffers()))


def same_architecture(modules: Sequence[nn.Module]) -> bool:
    """True if every module has the first one's class and parameter/buffer names, shapes and dtypes."""
    first = signature(modules[0])
    return all(signature(m) == first for m in modules[1:])


class _Call(nn.Module):
    """Holds the first network as a submodule so `functional_call` can swap in another network's
    weights, while calling it through its runner (a FeatureTap returns (output, features))."""

    def __init__(self, runner):
        super().__init__()
        self.net = _module_of(runner)
        self._runner = (runner,)  # in a tuple: not registered a second time as a submodule

    def forward(self, x: Tensor):
        return self._runner[0](x)


class ParallelForward:
    """`pf(x) -> [runner_1(x), ..., runner_N(x)]` for frozen networks, under `torch.inference_mode`.

    runners: the networks (`nn.Module`) or `FeatureTap`s on them (each output is then
             `(logits, {point: feature})`); to be vmapped they must share an architecture and points.
    strategy: "auto" (measure, keep the fastest per input shape), or one of `STRATEGIES`.
    The stacked copy of the weights used by "vmap" is rebuilt when a network is moved, cast or reloaded
    (`load_state_dict`); editing a single tensor of a frozen network in place is not detected.
    """

    def __init__(self, runners: Sequence, strategy: str = "auto"):
        if not runners:
            raise ValueError("ParallelForward needs at least one network")
        if strategy != "auto" and strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; valid: auto, {', '.join(STRATEGIES)}")
        self.runners = list(runners)
        self.modules = [_module_of(r) for r in self.runners]
        points = [getattr(r, "points", None) for r in self.runners]
        self.vmappable = (len(self.modules) > 1 and same_architecture(self.modules)
                          and all(p == points[0] for p in points))
        self.strategy = strategy
        if strategy == "vmap" and not self.vmappable:
            raise ValueError("strategy 'vmap' needs at least two networks of one architecture (and taps on "
                             "the same points)")
        self.choices: dict[tuple, str] = {}            # input signature -> strategy in use ("auto")
        self.timings: dict[tuple, dict[str, float]] = {}  # input signature -> seconds per call, measured
        self._stacked: tuple | None = None             # (key, vmapped call, params, buffers)
        self._streams: list = []

    # -- strategies ---------------------------------------------------------------------------------
    def available(self, device: torch.device) -> list[str]:
        """The strategies that run on `device` (what `run` accepts)."""
        out = ["loop"]
        if self.vmappable:
            out.append("vmap")
        if device.type == "cuda" and len(self.runners) > 1:
            out.append("streams")
        return out

    def candidates(self, device: torch.device) -> list[str]:
        """The strategies "auto" measures: those that can win on `device` (on a CPU only the loop)."""
        return self.available(device) if device.type == "cuda" else ["loop"]

    def _loop(self, x: Tensor) -> list:
        return [r(x) for r in self.runners]

    def _weights_key(self) -> tuple:
        """Changes when a network is moved or cast (new storage) or reloaded (load_state_dict writes every
        tensor in place, bumping its version counter); watching each network's first parameter and first
        buffer keeps this check to a few attribute reads per call."""
        watched = [t for m in self.modules for t in (next(m.parameters(), None), next(m.buffers(), None))
                   if t is not None]
        return tuple((t.device, t.dtype, t.data_ptr(), t._version) for t in watched)

    def _stack(self, dtype: torch.dtype | None):
        """(vmapped call, stacked params, stacked buffers); floating tensors cast to `dtype` if given."""
        key = (dtype, self._weights_key())
        if self._stacked is None or self._stacked[0] != key:
            call = _Call(self.runners[0])

            def stack(tensors: list[Tensor]) -> Tensor:
                t = torch.stack(tensors)
                return t.to(dtype) if dtype is not None and t.is_floating_point() else t
            params = {f"net.{n}": stack([dict(m.named_parameters())[n] for m in self.modules])
                      for n, _ in self.modules[0].named_parameters()}
            buffers = {f"net.{n}": stack([dict(m.named_buffers())[n] for m in self.modules])
                       for n, _ in self.modules[0].named_buffers()}
            fn = vmap(lambda p, b, x: functional_call(call, (p, b), (x,)), in_dims=(0, 0, None))
            self._stacked = (key, fn, params, buffers)
        return self._stacked[1:]

    def _vmap(self, x: Tensor) -> list:
        # vmap runs below autocast (torch.func does not apply it), so under autocast the weights are
        # stacked in the autocast dtype and the input cast: the same precision as the loop, and no
        # per-call cast of every weight.
        device_type = x.device.type
        dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
        fn, params, buffers = self._stack(dtype)
        with warnings.catch_warnings():  # functorch's "no batching rule" note: "auto" measures the cost
            warnings.filterwarnings("ignore", message="There is a performance drop because we have not yet")
            out = fn(params, buffers, x if dtype is None else x.to(dtype))
        return [_index(out, i) for i in range(len(self.modules))]

    def _streams_run(self, x: Tensor) -> list:
        main = torch.cuda.current_stream(x.device)
        if len(self._streams) != len(self.runners):
            self._streams = [torch.cuda.Stream(x.device) for _ in self.runners]
        outs = []
        for stream, runner in zip(self._streams, self.runners):
            stream.wait_stream(main)
            with torch.cuda.stream(stream):
                outs.append(runner(x))
            x.record_stream(stream)  # x must outlive the work queued on this stream
        for stream, out in zip(self._streams, outs):
            main.wait_stream(stream)
            for t in tree_flatten(out)[0]:
                if isinstance(t, Tensor):
                    t.record_stream(main)  # freed on the main stream, allocated on the side stream
        return outs

    def run(self, strategy: str, x: Tensor) -> list:
        """The outputs with a given strategy (no measurement)."""
        fn = {"loop": self._loop, "vmap": self._vmap, "streams": self._streams_run}[strategy]
        with torch.inference_mode():
            return fn(x)

    # -- choosing -------------------------------------------------------------------------------------
    def _measure(self, x: Tensor, reps: int = 3) -> dict[str, float]:
        cuda = x.device.type == "cuda"
        times = {}
        for name in self.candidates(x.device):
            self.run(name, x)  # warm-up: cudnn autotuning, stacking, allocator
            if cuda:
                torch.cuda.synchronize(x.device)
            t0 = time.perf_counter()
            for _ in range(reps):
                self.run(name, x)
            if cuda:
                torch.cuda.synchronize(x.device)
            times[name] = (time.perf_counter() - t0) / reps
        return times

    def __call__(self, x: Tensor) -> list:
        if self.strategy != "auto":
            return self.run(self.strategy, x)
        key = (tuple(x.shape), x.dtype, x.device, torch.is_autocast_enabled(x.device.type))
        choice = self.choices.get(key)
        if choice is None:
            options = self.candidates(x.device)
            if len(options) == 1:
                choice = options[0]
            else:
                known = (tuple(signature(m) for m in self.modules),
                         tuple(getattr(r, "points", None) for r in self.runners), key)
                choice = _MEASURED.get(known)
                if choice is None:
                    self.timings[key] = self._measure(x)
                    choice = _MEASURED[known] = min(self.timings[key], key=self.timings[key].get)
            self.choices[key] = choice
        return self.run(choice, x)


def _index(tree: Any, i: int) -> Any:
    """Entry i of every tensor in a (nested) output of a vmapped call."""
    if isinstance(tree, Tensor):
        return tree[i]
    if isinstance(tree, dict):
        return {k: _index(v, i) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_index(v, i) for v in tree)
    return tree


def vmap_forward_train(modules: Sequence[nn.Module], x: Tensor, template: nn.Module | None = None
                       ) -> list[Tensor]:
    """`[m(x) for m in modules]` for trainable networks of one architecture, as one vmapped pass.

    The parameters are stacked with `torch.stack` on every call, so the gradients flow back to each
    network's own parameters and its optimiser needs no change. Buffers (BatchNorm running statistics)
    are stacked, updated inside the pass as in the loop, and copied back to the networks afterwards.
    Every network must be in the same train/eval mode. `template`: a structural copy of the networks
    (e.g. `copy.deepcopy(modules[0]).to("meta")`), built once by the caller to save the copy per call.
    """
    template = template if template is not None else copy.deepcopy(modules[0]).to("meta")
    template.train(modules[0].training)
    names = [n for n, _ in modules[0].named_parameters()]
    bnames = [n for n, _ in modules[0].named_buffers()]
    per_net = [(dict(m.named_parameters()), dict(m.named_buffers())) for m in modules]
    params = {n: torch.stack([p[n] for p, _ in per_net]) for n in names}
    buffers = {n: torch.stack([b[n] for _, b in per_net]) for n in bnames}
    out = vmap(lambda p, b, x: functional_call(template, (p, b), (x,)), in_dims=(0, 0, None),
               randomness="different")(params, buffers, x)
    if modules[0].training and bnames:
        with torch.no_grad():
            dst = [b[n] for _, b in per_net for n in bnames]
            src = [buffers[n][i] for i in range(len(modules)) for n in bnames]
            torch._foreach_copy_(dst, src)
    return list(out.unbind(0))


def make_template(module: nn.Module) -> nn.Module:
    """A weightless structural copy of `module` for `vmap_forward_train`."""
    return copy.deepcopy(module).to("meta")


Runner = Callable[[Tensor], Any]
