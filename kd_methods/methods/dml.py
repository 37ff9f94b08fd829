"""Deep Mutual Learning (Zhang, Xiang, Hospedales & Lu, CVPR 2018).

A cohort of K >= 2 networks learns together from scratch, with no pretrained teacher. Each network k is
trained with its own supervised loss and a mimicry loss towards the other networks' predictions
(Eq. 10):

    L_k = CE(y, p_k) + 1/(K-1) * sum_{l != k} KL(p_l || p_k)

The other networks' predictions p_l are constants in network k's loss (`dml_loss` detaches them), so
the sum of all K losses, taken in one backward pass, gives every network exactly its own gradient.

DML_e (Sec. 4, "ensemble" variant) instead matches the average of the others:
L_k = CE(y, p_k) + KL(1/(K-1) sum_{l != k} p_l || p_k); the paper finds it worse than DML. For K = 2
the two variants coincide.

Update order (`update_order`). Algorithm 1 updates the networks in turn within each step ("sequential"):
network 1 from the predictions of all networks, then "update the predictions p1 and p2" and network 2
from them, and so on (the released TensorFlow code does the same, one train op per network, each
recomputing the predictions). Network k then mimics the predictions of networks 1..k-1 as they are after
their update in this step. "simultaneous", the default, updates all K from one forward pass (every
network mimics its peers as they were before the step); it costs K forward passes per step where
sequential costs K*K. The default is chosen from measurements on real images (`_DEFAULT_ORDER_NOTE`); the
reproductions of the paper's tables name Algorithm 1's order. In the sequential form each network is the
only one that builds a graph in its update, the others' predictions are recomputed without gradients and
with batch norm normalising by the batch without adding it to their running statistics (the released
code likewise runs only the updated network's batch-norm update ops), so every network counts each batch
once. One batch serves all K updates of a step, as in Algorithm 1 (the released code dequeues a new batch
for each network's update).

The student is network 1; `peers` names the architectures of networks 2..K, built fresh with
`create_model(name, num_classes)`. Every network is evaluated (`net1`, `net2`, ...); the student is the
headline.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..functional import dml_loss, ensemble_kd_loss
from ..models import create_model, input_channels
from .base import METHODS, Distiller, Hyper, Stage, StepContext

VARIANTS = ("dml", "dml_e")
UPDATE_ORDERS = ("simultaneous", "sequential")
_ORDER_NOTE = ("Algorithm 1: network 1 is updated, the predictions are recomputed, then network 2 is updated, "
               "and so on (the released code likewise runs one train op per network)")
_DEFAULT_ORDER_NOTE = (
    "not the paper's order (Algorithm 1 is `sequential`, which the reproductions of the paper's tables name): "
    "all K networks updated from one forward pass a step, each mimicking its peers as they were before the "
    "step. Chosen from the evidence: on real Fashion-MNIST (claims benchmark, ResNet-8 pairs, 3 seeds each) "
    "Algorithm 1's order was worse than one forward pass where the networks do not fit their images "
    "(network 1: -0.79 points, 95% interval [-1.15, -0.44]) and where they do (dml_fitting table: -0.46 "
    "[-0.88, -0.05]; there both orders beat training alone, one forward pass by more), and it costs K*K "
    "forward passes a step instead of K (1.4x a ResNet-32 pair's step on 2 CPU cores)")


@contextmanager
def batch_statistics_only(networks):
    """Batch norm normalises by the batch without adding it to its running statistics: a peer whose
    prediction is recomputed within a step counts the batch once, in its own update."""
    norms = [m for net in networks for m in net.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in norms:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in norms:
            m.track_running_stats = True


@METHODS.register("dml")
class DML(Distiller):
    """Mutual learning of the student (net1) and `peers` (net2..netK) in one stage.

    Losses, for each network k: `loss_ce_net{k}` = CE(y, p_k) and `loss_dml_net{k}` = the mimicry term.
    The engine sums them; since each term's targets are detached, the sum's gradient for network k is
    the gradient of L_k alone.
    """

    name = "dml"
    paper = "Zhang, Xiang, Hospedales & Lu, 'Deep Mutual Learning', CVPR 2018"
    equation = "Eq. 10: L_k = CE(y, p_k) + 1/(K-1) sum_{l!=k} KL(p_l || p_k); DML_e: KL(mean_{l!=k} p_l || p_k)"
    stage_names = ("train",)
    max_teachers = 0
    defaults = {
        "peers": Hyper(("cifar_resnet32",), "assumed",
                       "architectures of networks 2..K (the student is network 1); the paper's tables pair "
                       "every combination of ResNet-32, MobileNet, InceptionV1 and WRN-28-10, so each "
                       "experiment names its own"),
        "variant": Hyper("dml", "paper", "'dml' (Eq. 10) or 'dml_e' (match the peers' average, Sec. 4)"),
        "temperature": Hyper(1.0, "paper",
                             "the class posterior (Eq. 1) is a plain softmax, with no temperature: T = 1; T != 1 "
                             "divides logits by T in the mimicry term and scales it by T^2 as in Hinton's KD"),
        "update_order": Hyper("simultaneous", "assumed", _DEFAULT_ORDER_NOTE,
                              options={"sequential": ("paper", _ORDER_NOTE)}),
    }

    def __init__(self, student: nn.Module, teachers: Sequence[nn.Module] = (),
                 num_classes: int = 100, **hparams):
        super().__init__(student, teachers, num_classes=num_classes, **hparams)
        peers = self.hp["peers"]
        if isinstance(peers, str) or not peers:
            raise ConfigError(f"dml: 'peers' must be a non-empty list of model names, got {peers!r}; "
                              f"e.g. peers: [cifar_resnet32]")
        if self.hp["variant"] not in VARIANTS:
            raise ConfigError(f"dml: unknown variant {self.hp['variant']!r}; valid: {', '.join(VARIANTS)}")
        if not self.hp["temperature"] > 0:
            raise ConfigError(f"dml: temperature must be > 0, got {self.hp['temperature']!r}")
        if self.hp["update_order"] not in UPDATE_ORDERS:
            raise ConfigError(f"dml: unknown update_order {self.hp['update_order']!r}; valid: "
                              f"{', '.join(UPDATE_ORDERS)}")
        channels = input_channels(student)  # the peers see the student's images
        self.peers = nn.ModuleList(create_model(name, num_classes, in_chans=channels) for name in peers)

    @classmethod
    def built_networks(cls, hparams) -> tuple[str, ...]:
        peers = hparams.get("peers", cls.defaults["peers"].value)
        return (peers,) if isinstance(peers, str) else tuple(peers)

    @property
    def networks(self) -> list[nn.Module]:
        return [self.student, *self.peers]

    def train_losses(self) -> tuple[str, ...]:
        k = len(self.networks)
        return tuple(f"loss_{kind}_net{i}" for i in range(1, k + 1) for kind in ("ce", "dml"))

    def stages(self) -> list[Stage]:
        updates = ()
        if self.hp["update_order"] == "sequential":
            updates = tuple((f"net{k}",) for k in range(1, len(self.networks) + 1))
        return [Stage("train", trains=("student", "peers"), losses=self.train_losses(), updates=updates)]

    def trainable_groups(self) -> dict[str, nn.Module]:
        nets = {f"net{k}": net for k, net in enumerate(self.networks, start=1)}  # the sequential updates
        return {"student": self.student, "peers": self.peers, **nets}

    def mimicry(self, logits: Tensor, others: list[Tensor]) -> Tensor:
        """Network k's mimicry term towards the other networks' logits (treated as constants)."""
        t = float(self.hp["temperature"])
        if self.hp["variant"] == "dml_e":
            return ensemble_kd_loss(logits, [o.detach() for o in others], t)
        return t * t * dml_loss(logits / t, [o / t for o in others])  # T = 1: Eq. 10 exactly

    def forward_train(self, images: Tensor, targets: Tensor, ctx: StepContext
                      ) -> tuple[Tensor, dict[str, Tensor]]:
        if ctx.update is None:  # simultaneous: every network from one forward pass
            all_logits = [net(images) for net in self.networks]
            return all_logits[0], self.cohort_losses(all_logits, targets)
        (name,) = ctx.update  # sequential: network k's update, from the peers' current predictions
        k = int(name[len("net"):])
        net = self.networks[k - 1]
        logits = net(images)
        others = [n for n in self.networks if n is not net]
        with torch.no_grad(), batch_statistics_only(others):
            other_logits = [n(images) for n in others]
        return logits, {f"loss_ce_net{k}": F.cross_entropy(logits, targets),
                        f"loss_dml_net{k}": self.mimicry(logits, other_logits)}

    def cohort_losses(self, all_logits: list[Tensor], targets: Tensor) -> dict[str, Tensor]:
        """Eq. 10 for every peer k: its cross-entropy and its mimicry of the others."""
        losses = {}
        for k, logits in enumerate(all_logits, start=1):
            others = [z for j, z in enumerate(all_logits, start=1) if j != k]
            losses[f"loss_ce_net{k}"] = F.cross_entropy(logits, targets)
            losses[f"loss_dml_net{k}"] = self.mimicry(logits, others)
        return losses

    def eval_models(self) -> dict[str, nn.Module]:
        return {f"net{i}": net for i, net in enumerate(self.networks, start=1)}
