"""Intermediate features through forward hooks, addressed by module path (no model surgery).

A point is a dotted module path such as ``"layer3"`` or ``"layer3.8.relu"``; the output of that module is
captured, or its first positional input with the suffix ``":in"``. Integer parts index Sequential and
ModuleList containers and may be negative (``"layer3.-1"`` is the last block of ``layer3``).

Caveat for models with in-place activations (torchvision/timm ResNets): a ``":in"`` capture of an
in-place module is copied before the module runs, but an output capture of a module whose output is
later modified in place (a BN followed by ``ReLU(inplace=True)``) sees the modified values; tap the
activation's input instead.
"""
from __future__ import annotations

import difflib
from typing import Any, Mapping

import torch
from torch import nn

from kd_methods.errors import ConfigError

_SUFFIXES = ("in", "out")


def _split(spec: str) -> tuple[str, str]:
    path, _, where = spec.partition(":")
    where = where or "out"
    if where not in _SUFFIXES:
        raise ConfigError(f"feature point '{spec}' has suffix ':{where}'; use ':in' or no suffix")
    return path, where


def resolve_module(model: nn.Module, path: str) -> tuple[str, nn.Module]:
    """The module at dotted ``path`` and its canonical path (negative indices made explicit)."""
    module, parts = model, []
    for token in path.split(".") if path else []:
        names = list(module._modules)
        if token not in module._modules and isinstance(module, (nn.Sequential, nn.ModuleList)):
            try:
                token = names[int(token)]
            except (ValueError, IndexError):
                pass
        child = module._modules.get(token)
        if child is None:
            candidates = [name for name, _ in model.named_modules() if name]
            close = difflib.get_close_matches(path, candidates, n=4, cutoff=0.5) or list(model._modules)[:8]
            raise ConfigError(f"no module '{path}' in {type(model).__name__}; "
                              f"close candidates: {', '.join(close)}")
        module = child
        parts.append(token)
    return ".".join(parts), module


def canonical_point(model: nn.Module, spec: str) -> str:
    path, where = _split(spec)
    canonical, _ = resolve_module(model, path)
    return canonical + (":in" if where == "in" else "")


class _AllCaptured(Exception):
    """Raised by a `FeatureTap(stop=True)` hook once the last point is captured: it ends the forward pass."""


class FeatureTap:
    """Capture named intermediate tensors while the model runs.

    ``FeatureTap(model, {"s3": "layer3", "pre": "layer3.-1.relu_out:in"})``; ``tap(x)`` returns
    ``(model(x), {"s3": tensor, "pre": tensor})``. The tensors are the ones in the autograd graph (not
    detached), and the tap holds no reference to them after returning. The hooks record only during
    ``tap(x)``: calling the model directly while a tap is attached captures nothing, so a tap can stay
    on a network for its whole training. Use as a context manager or call ``remove()`` to take the
    hooks off.

    With ``stop=True`` the forward pass ends as soon as every point is captured and ``tap(x)`` returns
    ``(None, features)``: what follows the last point neither runs (its cost is saved) nor, in train mode,
    updates its batch-norm statistics (a stage that trains a network up to a point, FitNets' hint stage).
    """

    def __init__(self, model: nn.Module, points: Mapping[str, str], stop: bool = False):
        self.model = model
        self.stop = stop
        self.points: dict[str, str] = {}  # name -> canonical point
        self._store: dict[str, Any] = {}
        self._active = False  # hooks record only inside __call__
        self._handles = []
        try:
            for name, spec in points.items():
                path, where = _split(spec)
                canonical, module = resolve_module(model, path)
                if where == "in":
                    self.points[name] = canonical + ":in"
                    copy = bool(getattr(module, "inplace", False))
                    self._handles.append(module.register_forward_pre_hook(self._input_hook(name, copy)))
                else:
                    self.points[name] = canonical
                    self._handles.append(module.register_forward_hook(self._output_hook(name)))
        except BaseException:
            self.remove()
            raise

    def _keep(self, name: str, value: Any) -> None:
        if not self._active:
            return
        if name in self._store:
            raise ConfigError(f"module of feature point '{self.points[name]}' ran twice in one forward pass; "
                              "tap a module that runs once (for example its parent block)")
        self._store[name] = value
        if self.stop and len(self._store) == len(self.points):
            raise _AllCaptured

    def _input_hook(self, name: str, copy: bool):
        def hook(module: nn.Module, inputs: tuple) -> None:
            if not self._active:
                return
            if not inputs:
                raise ConfigError(f"feature point '{self.points[name]}' got no positional input to capture")
            self._keep(name, inputs[0].clone() if copy else inputs[0])
        return hook

    def _output_hook(self, name: str):
        def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
            self._keep(name, output)
        return hook

    def __call__(self, *args: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        if not self._handles and self.points:
            raise RuntimeError("this FeatureTap was removed; create a new one")
        self._store.clear()
        self._active = True
        try:
            try:
                output = self.model(*args, **kwargs)
            except _AllCaptured:
                output = None
            missing = [self.points[name] for name in self.points if name not in self._store]
            if missing:
                raise ConfigError(f"feature points {', '.join(missing)} did not run in "
                                  f"{type(self.model).__name__}.forward; tap modules on its forward path")
            features = {name: self._store[name] for name in self.points}
        finally:
            self._active = False
            self._store.clear()
        return output, features

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> "FeatureTap":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


def _is_resnet(model: nn.Module) -> bool:
    """timm or torchvision ImageNet ResNet: conv1/bn1/(act1|relu)/maxpool stem, layer1..layer4."""
    parts = ("conv1", "bn1", "maxpool", "layer1", "layer2", "layer3", "layer4")
    return all(hasattr(model, p) for p in parts) and (hasattr(model, "act1") or hasattr(model, "relu"))


def _resnet_points(model: nn.Module, pre_activation: bool) -> dict[str, str]:
    points = {"stem": "layer1:in", **{f"stage{i}": f"layer{i}" for i in range(1, 5)}, "final": "layer4"}
    if pre_activation:
        last = model.layer4[-1]
        if not hasattr(last, "act2"):
            raise ConfigError(f"{type(model).__name__} (torchvision) reuses one in-place ReLU inside each "
                              "block, so pre-activation outputs cannot be tapped; use timm's ResNet of the "
                              "same name (same state-dict keys) or pre_activation=False")
        act = "act3" if hasattr(last, "act3") else "act2"
        points.update({f"stage{i}": f"layer{i}.-1.{act}:in" for i in range(1, 5)})
    return points


def stage_points(model: nn.Module, pre_activation: bool = False) -> dict[str, str]:
    """Standard feature points of a model: name -> canonical module path.

    "stem": the map entering the first stage; "stage1".."stageN": each stage's output; "final": the last
    map before global pooling, after its activation. With ``pre_activation=True`` the stage outputs are
    taken before the final ReLU of each stage's last block ("final" is unchanged).
    Our models declare ``feature_points`` (and ``feature_points_preact``); timm and torchvision ResNets are
    recognised by their structure. For a DDP or torch.compile wrapper the paths get its prefix
    ("module." or "_orig_mod."), so a FeatureTap on the wrapper taps the wrapped model.
    """
    for wrapper_attr in ("module", "_orig_mod"):  # (Distributed)DataParallel, torch.compile
        inner = getattr(model, wrapper_attr, None)
        if isinstance(inner, nn.Module) and not hasattr(model, "feature_points"):
            inner_points = stage_points(inner, pre_activation)
            return {key: f"{wrapper_attr}.{spec}" for key, spec in inner_points.items()}
    declared = getattr(model, "feature_points", None)
    name = type(model).__name__
    if declared:
        points = dict(declared)
        if pre_activation:
            preact = getattr(model, "feature_points_preact", None)
            if preact is None:
                raise ConfigError(f"{name} has no pre-activation feature points; use pre_activation=False")
            points.update(preact)
    elif _is_resnet(model):
        points = _resnet_points(model, pre_activation)
    else:
        raise ConfigError(f"{name} declares no feature points; pass module paths to FeatureTap yourself")
    return {key: canonical_point(model, spec) for key, spec in points.items()}


# Parameters from which a dry run computes shapes without arithmetic (meta device, fake tensors): a
# ResNeXt-29 16x64d forward of two images costs 2 s of CPU; below, real arithmetic is the cheaper way
# (meta and fake tensors cost Python work per operation: ResNet-110's 330 layers, 0.3 s).
SHAPES_ONLY_ABOVE = 10_000_000


class _Tapped(nn.Module):
    """Calls `tap` on its model, which it registers so `functional_call` can swap the model's tensors."""

    def __init__(self, model: nn.Module, tap: FeatureTap):
        super().__init__()
        self.net = model
        self._tap = (tap,)  # in a tuple: not a submodule

    def forward(self, x: torch.Tensor):
        return self._tap[0](x)


def _on_meta(model: nn.Module) -> dict[str, torch.Tensor]:
    """Meta stand-ins for every parameter and buffer of `model` (as `_Tapped`'s "net")."""
    tensors = list(model.named_parameters(remove_duplicate=False)) + list(model.named_buffers(remove_duplicate=False))
    return {f"net.{n}": torch.empty_like(t, device="meta") for n, t in tensors}


def feature_shapes(model: nn.Module, points: Mapping[str, str],
                   input_size: tuple[int, int, int] = (3, 32, 32)) -> dict[str, torch.Size]:
    """Per-sample shape (C, H, W) of each feature point, from a dry run on 2 zero images in eval mode.

    Big models (`SHAPES_ONLY_ABOVE` parameters) run on the meta device (their tensors swapped for meta
    ones: shapes without arithmetic); the others, and any operation without a meta kernel, on the device
    of the model's parameters. Every module's train/eval mode is restored afterwards and no gradients are
    recorded.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with FeatureTap(model, points) as tap, torch.no_grad():
            features = None
            if sum(p.numel() for p in model.parameters()) >= SHAPES_ONLY_ABOVE:
                try:  # shapes only, on the meta device
                    _, features = torch.func.functional_call(_Tapped(model, tap), _on_meta(model),
                                                             (torch.zeros(2, *input_size, device="meta"),))
                except (NotImplementedError, RuntimeError, TypeError, ValueError):
                    pass  # an operation without a meta kernel: for real below
            if features is None:
                _, features = tap(torch.zeros(2, *input_size, device=device))
    finally:
        for m, mode in modes.items():
            m.training = mode
    shapes = {}
    for key, value in features.items():
        if not isinstance(value, torch.Tensor):
            raise ConfigError(f"feature point '{points[key]}' returns a {type(value).__name__}, not a tensor")
        shapes[key] = value.shape[1:]
    return shapes
