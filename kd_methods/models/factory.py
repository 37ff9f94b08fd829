"""Build any registered model by name and optionally load a local state-dict file."""
from __future__ import annotations

import os
from typing import Any, Mapping

import timm
import torch
import torchvision
from torch import nn

from kd_methods.errors import CheckpointError, ConfigError
from kd_methods.registry import closest

TORCHVISION_PREFIX = "torchvision."


def _torchvision_names() -> list[str]:
    return torchvision.models.list_models(module=torchvision.models)


def create_model(name: str, num_classes: int, pretrained_file: str | os.PathLike | None = None,
                 load_head: bool = True, in_chans: int | None = None, **kwargs: Any) -> nn.Module:
    """A model from timm's registry (ours included) or ``"torchvision.<name>"`` from torchvision.

    ``pretrained_file``: a local file saved with ``torch.save`` holding a state dict (or a checkpoint
    dict with it under "state_dict" or "model"); it is read with ``weights_only=True`` on the CPU and
    must fit the model exactly. ``load_head=False`` skips the classifier's weights (fine-tuning on a new
    label set, e.g. ImageNet weights for CUB-200). ``in_chans``: the images' channels (1 for MNIST-like
    sets; None: the model's default). Extra ``kwargs`` go to the model constructor.
    """
    if name.startswith(TORCHVISION_PREFIX):
        arch = name[len(TORCHVISION_PREFIX):]
        names = _torchvision_names()
        if arch not in names:
            raise ConfigError(f"unknown torchvision model '{arch}'{closest(arch, names)}")
        if in_chans not in (None, 3):
            raise ConfigError(f"torchvision model '{arch}' takes 3-channel images, not {in_chans}; use a timm "
                              f"or kd-bench model for this dataset")
        model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **kwargs)
        head = "fc" if isinstance(getattr(model, "fc", None), nn.Linear) else "classifier"
    else:
        if not timm.is_model(name):
            choices = timm.list_models() + [TORCHVISION_PREFIX + n for n in _torchvision_names()]
            raise ConfigError(f"unknown model '{name}'{closest(name, choices)}; valid names are those of "
                              f"timm.list_models() and 'torchvision.<name>'")
        if in_chans is not None:
            kwargs["in_chans"] = in_chans
        model = timm.create_model(name, num_classes=num_classes, **kwargs)
        head = model.pretrained_cfg.get("classifier", "fc")
    if pretrained_file is not None:
        load_state_file(model, pretrained_file, skip_prefix=None if load_head else head)
    return model


def input_channels(model: nn.Module) -> int:
    """The channels a network takes: its first convolution's input channels (3 if it has none)."""
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return conv.in_channels if conv is not None else 3


def probe_input_size(model: nn.Module) -> tuple[int, int, int]:
    """(C, H, W) of a dry run that measures a network's feature maps: its timm pretrained_cfg size (else
    CIFAR's 32x32) with the channels it was built for (a CIFAR net built for 1-channel Fashion-MNIST gets
    1 channel)."""
    _, *spatial = getattr(model, "pretrained_cfg", {}).get("input_size", (3, 32, 32))
    return (input_channels(model), *spatial)


def _unwrap(obj: Any) -> Mapping[str, torch.Tensor] | None:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    return None


def _strip(key: str) -> str:
    for prefix in ("module.", "_orig_mod."):  # DDP and torch.compile wrappers
        while key.startswith(prefix):
            key = key[len(prefix):]
    return key


def load_state_file(model: nn.Module, path: str | os.PathLike, skip_prefix: str | None = None) -> None:
    """Load a state dict saved with ``torch.save`` into ``model``; CheckpointError when it does not fit."""
    if not os.path.isfile(path):
        raise CheckpointError(f"pretrained file {path} does not exist; pass the path of a saved state dict")
    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"cannot read pretrained file {path} ({type(exc).__name__}); "
                              "it is truncated, corrupt or not a torch.save file") from None
    state = _unwrap(obj)
    if state is None:
        raise CheckpointError(f"pretrained file {path} holds no state dict (a mapping of names to tensors)")
    state = {_strip(k): v for k, v in state.items()}
    expected = model.state_dict()
    if skip_prefix:
        state = {k: v for k, v in state.items() if not k.startswith(skip_prefix + ".")}
        expected = {k: v for k, v in expected.items() if not k.startswith(skip_prefix + ".")}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong_shape:
        def some(keys: list[str]) -> str:
            return ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
        raise CheckpointError(
            f"pretrained file {path} does not fit {type(model).__name__}: "
            f"{len(missing)} missing keys ({some(missing)}), "
            f"{len(unexpected)} unexpected ({some(unexpected)}), "
            f"{len(wrong_shape)} with another shape ({some(wrong_shape)}); "
            "check the model name and num_classes")
    model.load_state_dict(state, strict=not skip_prefix)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
