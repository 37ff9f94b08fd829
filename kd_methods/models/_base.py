"""What every model of the zoo shares: timm registration, weight init and timm's classifier API."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


def cifar_cfg(num_classes: int = 100, **overrides: Any) -> dict[str, Any]:
    """A timm pretrained_cfg for a 32x32 CIFAR model without downloadable weights."""
    mean, std = (CIFAR100_MEAN, CIFAR100_STD) if num_classes == 100 else (CIFAR10_MEAN, CIFAR10_STD)
    cfg = dict(url="", num_classes=num_classes, input_size=(3, 32, 32), pool_size=(8, 8),
               crop_pct=1.0, interpolation="bilinear", mean=mean, std=std,
               first_conv="conv1", classifier="fc")
    cfg.update(overrides)
    return cfg


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal convs (fan_out, ReLU gain, zero bias); BatchNorm weight 1, bias 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def uniform_init(model: nn.Module, bound: float) -> None:
    """Every convolution and linear weight from U(-bound, bound), their biases 0 (FitNets' MNIST protocol:
    "weights initialized from U(-0.005, 0.005)"); batch norm keeps its own."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.uniform_(m.weight, -bound, bound)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class ClassifierNet(nn.Module):
    """Body -> global pool -> (dropout) -> fc, with the methods timm's tooling expects.

    Subclasses implement ``forward_features``; the classifier ``self.fc`` maps ``fc_features`` (by default
    ``num_features``, the pooled width) to ``num_classes``.
    ``feature_points`` (and ``feature_points_preact``) name the standard feature taps, see
    ``kd_methods.models.features.stage_points``.
    """

    feature_points: dict[str, str] = {}
    feature_points_preact: dict[str, str] | None = None
    # The engine trains in channels_last unless a network of the run says it is slower for it.
    prefers_channels_last: bool = True

    def __init__(self, num_classes: int, num_features: int, drop_rate: float = 0.0,
                 fc_features: int | None = None):
        super().__init__()
        self.num_classes = num_classes
        self.num_features = num_features
        self.fc_features = num_features if fc_features is None else fc_features
        self.drop_rate = drop_rate
        self.global_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.fc = self._make_fc(num_classes)

    def _make_fc(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.fc_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        x = nn.functional.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            raise ValueError(f"{type(self).__name__} has a fixed global pooling; pass global_pool=None")
        self.num_classes = num_classes
        self.fc = self._make_fc(num_classes)
