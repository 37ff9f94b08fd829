"""Person re-identification evaluation: CMC rank-k accuracy and mean average precision (mAP).

The standard Market-1501 protocol (Zheng et al., ICCV 2015, and the benchmark's evaluation code): every
query image is matched against the gallery by the distance between their features, and for each query

- *good* matches are gallery images of the query's identity taken by a **different** camera;
- *junk* images are removed from the ranking as if absent: gallery images of the same identity taken by
  the **same** camera (too easy a match), and badly detected boxes (identity -1);
- every other gallery image, distractors (identity 0) included, is a negative.

CMC rank-k = the fraction of queries whose first good match is within the top k of the junk-free
ranking. AP is computed as the benchmark's official code does (``compute_AP.m``): recall steps are
weighted by the mean of the precision just before and at each hit (trapezoidal rule); ``interpolation=
"none"`` gives the plain mean of the precisions at the hits used by most Python re-ID libraries (the two
differ by a few tenths of a point). mAP averages AP over the queries that have at least one good match.

DML (Zhang et al., CVPR 2018, Sec. 3.1) trains a 751-way identity classifier and matches queries by the
features of the last pooling layer; `extract_features` takes those from any timm-style model
(`forward_features` then `forward_head(pre_logits=True)`).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
from torch import Tensor, nn

JUNK_ID = -1
INTERPOLATIONS = ("trapezoid", "none")


def pairwise_distances(query: Tensor, gallery: Tensor) -> Tensor:
    """(N_q, N_g) Euclidean distances between feature rows."""
    if query.ndim != 2 or gallery.ndim != 2 or query.shape[1] != gallery.shape[1]:
        raise ValueError(f"features must be (N, D) with the same D, got {tuple(query.shape)} and "
                         f"{tuple(gallery.shape)}")
    return torch.cdist(query.float(), gallery.float())


def average_precision(hits: np.ndarray, interpolation: str = "trapezoid") -> float:
    """AP of one ranking with junk removed; `hits[j]` is True when rank j is a good match.

    trapezoid: sum over hits i (1-based, at 0-based rank r_i) of 1/n * (p_before + p_at) / 2, with
    p_at = i / (r_i + 1) and p_before = (i - 1) / r_i (1 for a hit at the top), as in compute_AP.m.
    none: 1/n * sum over hits of p_at.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    ranks = np.flatnonzero(hits)
    n = len(ranks)
    if n == 0:
        raise ValueError("average precision needs at least one good match")
    i = np.arange(1, n + 1)
    at = i / (ranks + 1)
    if interpolation == "none":
        return float(at.mean())
    before = np.where(ranks == 0, 1.0, (i - 1) / np.maximum(ranks, 1))
    return float(((before + at) / 2).mean())


def evaluate_rankings(dist, query_ids, query_cams, gallery_ids, gallery_cams, ranks: Iterable[int] = (1, 5, 10),
                      interpolation: str = "trapezoid") -> dict[str, float]:
    """CMC rank-k accuracy and mAP, in %, under the Market-1501 protocol (see the module docstring).

    dist: (N_q, N_g) distances, smaller = more similar (array or tensor). Ties keep gallery order.
    Returns {"rank1": ..., "rank5": ..., "mAP": ..., "valid_queries": n}; queries without any good match
    are skipped (none in Market-1501).
    """
    dist = dist.detach().cpu().numpy() if isinstance(dist, Tensor) else np.asarray(dist)
    q_ids, q_cams, g_ids, g_cams = (np.asarray(a) for a in (query_ids, query_cams, gallery_ids, gallery_cams))
    if dist.shape != (len(q_ids), len(g_ids)) or len(q_cams) != len(q_ids) or len(g_cams) != len(g_ids):
        raise ValueError(f"distance matrix {dist.shape} does not fit {len(q_ids)} queries and {len(g_ids)} "
                         f"gallery images (with as many cameras)")
    ranks = sorted(set(int(k) for k in ranks))
    if not ranks or ranks[0] < 1:
        raise ValueError(f"ranks must be positive integers, got {ranks}")
    hits_at = np.zeros(len(ranks))
    aps = []
    for q in range(len(q_ids)):
        order = np.argsort(dist[q], kind="stable")
        same_id = g_ids[order] == q_ids[q]
        junk = (same_id & (g_cams[order] == q_cams[q])) | (g_ids[order] == JUNK_ID)
        hits = (same_id & ~junk)[~junk]
        if not hits.any():
            continue
        first = int(np.argmax(hits))
        hits_at += [first < k for k in ranks]
        aps.append(average_precision(hits, interpolation))
    n = len(aps)
    if n == 0:
        raise ValueError("no query has a good match in the gallery (same identity, different camera)")
    out = {f"rank{k}": round(100 * float(h) / n, 4) for k, h in zip(ranks, hits_at)}
    out["mAP"] = round(100 * float(np.mean(aps)), 4)
    out["valid_queries"] = n
    return out


@torch.inference_mode()
def extract_features(model: nn.Module, loader) -> Tensor:
    """Pooled pre-classifier features of every image the loader yields, in order, on the CPU.

    `model` must follow timm's API (forward_features, forward_head(pre_logits=True)); every model of
    our zoo and timm does.
    """
    was_training = model.training
    model.eval()
    feats = []
    for images, _ in loader:
        f = model.forward_head(model.forward_features(images), pre_logits=True)
        feats.append(f.float().flatten(1).cpu())
    model.train(was_training)
    return torch.cat(feats)


def evaluate_reid(model: nn.Module, query_loader, gallery_loader, query_ids, query_cams, gallery_ids,
                  gallery_cams, interpolation: str = "trapezoid") -> dict[str, float]:
    """Features of the query and gallery images, Euclidean matching, then `evaluate_rankings`."""
    dist = pairwise_distances(extract_features(model, query_loader), extract_features(model, gallery_loader))
    return evaluate_rankings(dist, query_ids, query_cams, gallery_ids, gallery_cams,
                             interpolation=interpolation)
