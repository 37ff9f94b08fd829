"""Pure loss functions of the distillation papers, one per published formula.

Shapes: logits are (N, K); feature maps are (N, C, H, W). Every function returns a scalar tensor
(batch mean where a batch is involved) unless its docstring says otherwise, keeps no state and
computes in float32 even under autocast (inputs are upcast), so a bf16/fp16 step gets the same loss
as an fp32 step up to the precision of its inputs.

Teacher arguments are used as given: callers pass constants (see `methods.base.as_constant`). Only
`dml_loss` detaches its peers itself, because in mutual learning the peers are live networks.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "kd_loss", "ensemble_kd_loss", "attention_map", "at_loss", "fsp_matrix", "fsp_loss",
    "hint_loss", "factor_loss", "feed_loss", "feature_l1_loss", "reconstruction_loss",
    "dml_loss", "tsd_penalty", "label_smoothing_penalty", "confidence_penalty",
]


def _f32(x: Tensor) -> Tensor:
    return x.float() if x.dtype != torch.float32 else x


def _check_same_shape(a: Tensor, b: Tensor, what: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{what}: student and teacher shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")


def _soft_kl(target_probs: Tensor, log_q: Tensor) -> Tensor:
    """Batch mean of KL(p || q) = sum_k p_k (log p_k - log q_k), with 0 log 0 = 0."""
    return (torch.xlogy(target_probs, target_probs) - target_probs * log_q).sum(1).mean()


# -- logit distillation ------------------------------------------------------------------------

def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Hinton et al. 2015, "Distilling the Knowledge in a Neural Network", Sec. 2.

    T^2 * KL(softmax(t/T) || softmax(s/T)), batch mean. The T^2 factor keeps the gradient scale of the
    soft term independent of T (Sec. 2.1). Logits: (N, K).
    """
    _check_same_shape(student_logits, teacher_logits, "kd_loss")
    with torch.autocast(student_logits.device.type, enabled=False):
        t = float(temperature)
        log_q = F.log_softmax(_f32(student_logits) / t, dim=1)
        p = F.softmax(_f32(teacher_logits) / t, dim=1)
        return t * t * _soft_kl(p, log_q)


def ensemble_kd_loss(student_logits: Tensor, teacher_logits_list: Sequence[Tensor],
                     temperature: float) -> Tensor:
    """KD from an ensemble (Hinton et al. 2015, Sec. 2; FEED Table 2's "KD" column).

    The target is the average of the teachers' softened outputs, p = 1/N sum_n softmax(t_n/T), and the
    loss is T^2 * KL(p || softmax(s/T)), batch mean. With one teacher this equals `kd_loss`.
    """
    if len(teacher_logits_list) == 0:
        raise ValueError("ensemble_kd_loss needs at least one teacher")
    for t_logits in teacher_logits_list:
        _check_same_shape(student_logits, t_logits, "ensemble_kd_loss")
    with torch.autocast(student_logits.device.type, enabled=False):
        t = float(temperature)
        log_q = F.log_softmax(_f32(student_logits) / t, dim=1)
        p = torch.stack([F.softmax(_f32(x) / t, dim=1) for x in teacher_logits_list]).mean(0)
        return t * t * _soft_kl(p, log_q)


def dml_loss(logits: Tensor, peer_logits: Sequence[Tensor] | Tensor) -> Tensor:
    """Deep Mutual Learning (Zhang et al. CVPR 2018), Eq. 10 without its CE term.

    1/(K-1) * sum_{l != k} KL(p_l || p_k), batch mean, where p = softmax(logits) (no temperature) and
    the K-1 peers' predictions are constants: they are detached here. `peer_logits` is a list of
    (N, K) tensors, or one (N, K) tensor for a single peer.
    """
    peers = [peer_logits] if isinstance(peer_logits, Tensor) else list(peer_logits)
    if not peers:
        raise ValueError("dml_loss needs at least one peer")
    for p in peers:
        _check_same_shape(logits, p, "dml_loss")
    with torch.autocast(logits.device.type, enabled=False):
        log_q = F.log_softmax(_f32(logits), dim=1)
        total = sum(_soft_kl(F.softmax(_f32(p.detach()), dim=1), log_q) for p in peers)
        return total / len(peers)


# -- tolerant-teacher penalties (Yang et al. 2018, "Training DNNs in Generations") --------------

TSD_ANCHORS = ("top", "label")  # the gap starts at the highest score (the paper) or at the label's


def tsd_penalty(logits: Tensor, targets: Tensor | None, k: int, anchor: str = "top") -> Tensor:
    """Top score difference (Yang et al. 2018, Sec. 3.2), batch mean of f_{a_1} - mean(f_{a_2}, ..., f_{a_k}),
    f = softmax(logits) and f_{a_j} its j-th largest element (the paper's notation): the gap between the
    highest score and the mean of the next k-1. k counts the highest class, so k >= 2. Adding
    eta * this term to the loss makes the network leave probability on its k-1 runners-up.

    anchor="label" is a variant the paper does not define: the ground-truth score f_y against the k-1
    highest scores of the other classes (`targets` serves only this variant). The two agree on every
    image whose highest score is its label's and differ on the others.
    logits: (N, K) ; targets: (N,) int64 or None.
    """
    num_classes = logits.shape[1]
    if not 2 <= k <= num_classes:
        raise ValueError(f"tsd_penalty: k must be in 2..{num_classes} (number of classes), got {k}")
    if anchor not in TSD_ANCHORS:
        raise ValueError(f"tsd_penalty: anchor must be one of {', '.join(TSD_ANCHORS)}, got {anchor!r}")
    with torch.autocast(logits.device.type, enabled=False):
        f = F.softmax(_f32(logits), dim=1)
        if anchor == "top":
            top = f.topk(k, dim=1).values
            return (top[:, 0] - top[:, 1:].mean(1)).mean()
        if targets is None:
            raise ValueError("tsd_penalty: anchor='label' needs the targets")
        f_y = f.gather(1, targets.view(-1, 1)).squeeze(1)
        others = f.scatter(1, targets.view(-1, 1), float("-inf"))
        return (f_y - others.topk(k - 1, dim=1).values.mean(1)).mean()


def label_smoothing_penalty(logits: Tensor) -> Tensor:
    """Label-smoothing variant of the tolerance term (Yang et al. 2018; Szegedy et al. 2016):
    batch mean of KL(u || softmax(logits)) with u the uniform distribution over the K classes.
    """
    with torch.autocast(logits.device.type, enabled=False):
        log_q = F.log_softmax(_f32(logits), dim=1)
        return (-math.log(logits.shape[1]) - log_q.mean(1)).mean()


def confidence_penalty(logits: Tensor) -> Tensor:
    """Confidence penalty (Pereyra et al. 2017; Yang et al. 2018): batch mean of the negative entropy
    sum_k p_k log p_k of p = softmax(logits)."""
    with torch.autocast(logits.device.type, enabled=False):
        log_p = F.log_softmax(_f32(logits), dim=1)
        return (log_p.exp() * log_p).sum(1).mean()


# -- feature distillation ----------------------------------------------------------------------

def _pool_to_smaller(a: Tensor, b: Tensor, pool) -> tuple[Tensor, Tensor]:
    """Pool whichever of two (N, C, H, W) maps is spatially larger down to the other's size."""
    if a.shape[-2:] == b.shape[-2:]:
        return a, b
    if a.shape[-2] >= b.shape[-2] and a.shape[-1] >= b.shape[-1]:
        return pool(a, b.shape[-2:]), b
    if a.shape[-2] <= b.shape[-2] and a.shape[-1] <= b.shape[-1]:
        return a, pool(b, a.shape[-2:])
    raise ValueError(f"spatial sizes {tuple(a.shape[-2:])} and {tuple(b.shape[-2:])} cannot be pooled "
                     f"to one another")


def attention_map(feat: Tensor, p: int = 2) -> Tensor:
    """Attention Transfer (Zagoruyko & Komodakis, ICLR 2017), Eq. 2 with F_mean^p and the
    normalisation of Eq. 3: Q = vec(mean_c |A_c|^p) / ||vec(mean_c |A_c|^p)||_2.

    feat: (N, C, H, W) -> (N, H*W). The channel mean (not sum) follows the authors' code; it changes
    nothing after the L2 normalisation.
    """
    with torch.autocast(feat.device.type, enabled=False):
        q = _f32(feat).abs().pow(p).mean(1).flatten(1)
        return F.normalize(q, p=2, dim=1)


def at_loss(student_feat: Tensor, teacher_feat: Tensor, p: int = 2) -> Tensor:
    """Attention Transfer, Eq. 3 as in the authors' code: mean over batch and positions of
    (Q_s - Q_t)^2 for one student/teacher layer pair. The paper's beta/2 and the sum over pairs
    are the method's (`methods/at.py`).

    Channel counts may differ (attention maps are channel means). If the spatial sizes differ, the
    larger feature map is adaptive-average-pooled to the smaller one's size before the map is taken.
    """
    if student_feat.shape[0] != teacher_feat.shape[0]:
        raise ValueError(f"at_loss: batch sizes differ: {student_feat.shape[0]} vs {teacher_feat.shape[0]}")
    with torch.autocast(student_feat.device.type, enabled=False):
        s, t = _pool_to_smaller(_f32(student_feat), _f32(teacher_feat), F.adaptive_avg_pool2d)
        return (attention_map(s, p) - attention_map(t, p)).pow(2).mean()


def fsp_matrix(f1: Tensor, f2: Tensor) -> Tensor:
    """FSP matrix (Yim et al. CVPR 2017, Eq. 1): G_ij = sum_{h,w} F1_{h,w,i} F2_{h,w,j} / (h*w).

    f1: (N, C1, H1, W1), f2: (N, C2, H2, W2) -> (N, C1, C2). If the maps' spatial sizes differ, the
    larger one is max-pooled to the smaller's size (the usual case: f1 is the section's first map
    before a stride-2 block, max-pooled to f2's size).
    """
    if f1.shape[0] != f2.shape[0]:
        raise ValueError(f"fsp_matrix: batch sizes differ: {f1.shape[0]} vs {f2.shape[0]}")
    with torch.autocast(f1.device.type, enabled=False):
        f1, f2 = _pool_to_smaller(_f32(f1), _f32(f2), F.adaptive_max_pool2d)
        a, b = f1.flatten(2), f2.flatten(2)      # (N, C1, HW), (N, C2, HW)
        return torch.bmm(a, b.transpose(1, 2)) / a.shape[-1]


def fsp_loss(student_pairs: Sequence[tuple[Tensor, Tensor]],
             teacher_pairs: Sequence[tuple[Tensor, Tensor]],
             weights: Sequence[float] | None = None) -> Tensor:
    """FSP loss (Yim et al. 2017, Eq. 2): sum_i lambda_i * mean over batch of ||G_i^T - G_i^S||_F^2.

    Each pair is (f1, f2) from one network section; student pair i and teacher pair i must give
    FSP matrices of the same (C1, C2). Equal weights lambda_i = 1 unless given.
    """
    if len(student_pairs) != len(teacher_pairs) or not student_pairs:
        raise ValueError(f"fsp_loss: need the same, non-zero number of student and teacher pairs, "
                         f"got {len(student_pairs)} and {len(teacher_pairs)}")
    weights = [1.0] * len(student_pairs) if weights is None else list(weights)
    if len(weights) != len(student_pairs):
        raise ValueError(f"fsp_loss: {len(weights)} weights for {len(student_pairs)} pairs")
    total = 0.0
    for w, (s1, s2), (t1, t2) in zip(weights, student_pairs, teacher_pairs):
        g_s, g_t = fsp_matrix(s1, s2), fsp_matrix(t1, t2)
        _check_same_shape(g_s, g_t, "fsp_loss (FSP matrices)")
        total = total + w * (g_s - g_t).pow(2).sum((1, 2)).mean()
    return total


def hint_loss(student_regressed: Tensor, teacher_hint: Tensor) -> Tensor:
    """FitNets hint loss (Romero et al. ICLR 2015, Eq. 3): 1/2 ||u_h(x) - r(v_g(x))||^2, the squared
    L2 norm summed over C, H, W, averaged over the batch. Shapes must match (the regressor r makes them).
    """
    _check_same_shape(student_regressed, teacher_hint, "hint_loss")
    with torch.autocast(student_regressed.device.type, enabled=False):
        d = _f32(student_regressed) - _f32(teacher_hint)
        return 0.5 * d.pow(2).flatten(1).sum(1).mean()


def factor_loss(student_factor: Tensor, teacher_factor: Tensor) -> Tensor:
    """Factor Transfer (Kim, Park & Kwak, NeurIPS 2018), Eq. 3 with p = 1, as in the authors' code:
    mean over all elements of |F_s/||F_s||_2 - F_t/||F_t||_2|, where F = vec of one sample's factor.

    The paper writes the sum over the vector's elements; the released code averages them (nn.L1Loss),
    which is what its beta = 500 was tuned for. Shapes must match: (N, ...) each.
    """
    _check_same_shape(student_factor, teacher_factor, "factor_loss")
    with torch.autocast(student_factor.device.type, enabled=False):
        s = F.normalize(_f32(student_factor).flatten(1), p=2, dim=1)
        t = F.normalize(_f32(teacher_factor).flatten(1), p=2, dim=1)
        return (s - t).abs().mean()


def feed_loss(ntl_out: Tensor, teacher_feat: Tensor) -> Tensor:
    """FEED (Park & Kwak 2019), L_FEED = || x^T/||x^T||_2 - NTL(x^S)/||NTL(x^S)||_2 ||_1 on the final
    feature maps: the same normalised-L1 form as Factor Transfer, so this is `factor_loss` (mean over
    elements, FT's code) with the NTL output in place of the translator's factor.
    """
    return factor_loss(ntl_out, teacher_feat)


def feature_l1_loss(student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
    """Plain L1 between feature maps, mean over all elements: FEED Tables 1-2's "L1" baseline."""
    _check_same_shape(student_feat, teacher_feat, "feature_l1_loss")
    with torch.autocast(student_feat.device.type, enabled=False):
        return (_f32(student_feat) - _f32(teacher_feat)).abs().mean()


def reconstruction_loss(reconstruction: Tensor, target: Tensor, p: int = 1) -> Tensor:
    """Factor Transfer paraphraser loss (Kim et al. 2018, Eq. 1): L_rec = ||x - P(x)||.

    The paper writes the squared L2 norm; the authors' released code trains the paraphraser with
    nn.L1Loss (mean absolute error). Default p = 1 follows the code, which produced the paper's
    numbers; p = 2 gives the mean squared error. Means are over all elements.
    """
    _check_same_shape(reconstruction, target, "reconstruction_loss")
    if p not in (1, 2):
        raise ValueError(f"reconstruction_loss: p must be 1 or 2, got {p}")
    with torch.autocast(reconstruction.device.type, enabled=False):
        d = _f32(reconstruction) - _f32(target)
        return d.abs().mean() if p == 1 else d.pow(2).mean()
