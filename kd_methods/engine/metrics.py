"""Evaluation (top-1/top-5 error, mean posterior entropy) and the per-epoch metrics CSV."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import torch

from ..eval_reid import evaluate_reid
from . import distributed as dist
from .checkpoint import write_atomic


def topk_hits(logits: torch.Tensor, targets: torch.Tensor, k: int) -> torch.Tensor:
    """Per sample, the chance that `targets` is among the k highest `logits` when ties are broken at random.

    A target with `above` classes scoring strictly higher and sharing its score with `tied - 1` others
    occupies ranks above+1 .. above+tied, of which k - above fall in the top k: credit (k - above) / tied,
    clipped to [0, 1]. Without ties this is the usual 0/1 hit; with them it is the mean over tie-breaks,
    so a network whose logits are all equal scores chance (k / C), not 0% or 100% error, whatever order
    `topk` would pick. bf16 logits tie often: a ResNet-20 after 40 bf16 steps on synthetic100 had the
    target tied for the highest logit on 25 of 2,000 test images (1.25 points of top-1 error decided by
    `topk`'s order). A NaN target logit is a miss.
    """
    target = logits.gather(1, targets[:, None])
    above = (logits > target).sum(1)
    tied = (logits == target).sum(1)
    credit = (k - above).clamp(min=0).double() / tied.clamp(min=1)
    return credit.clamp(max=1) * (tied > 0)


@torch.inference_mode()
def evaluate_model(model, loader, autocast) -> dict[str, float]:
    """Errors in % over the whole test set (ties share their credit: `topk_hits`); entropy in nats (DML
    compares posterior entropies). Under DDP each rank scores its block and the sums are all-reduced, so a
    rank with a short or empty block counts exactly what it saw."""
    was_training = model.training
    model.eval()
    totals = None
    for images, targets in loader:
        with autocast:
            logits = model(images)
        logits = logits.float()
        logp = logits.log_softmax(dim=1)
        batch = torch.stack([topk_hits(logits, targets, 1).sum(), topk_hits(logits, targets, 5).sum(),
                             -(logp.exp() * logp).sum(dim=1).double().sum(),
                             torch.tensor(float(targets.numel()), dtype=torch.float64, device=logits.device)])
        totals = batch if totals is None else totals + batch
    model.train(was_training)
    if totals is None:  # this rank's block of the test set is empty; the others still need its zeros
        device = getattr(loader, "device", None) or dist.local_device()
        totals = torch.zeros(4, dtype=torch.float64, device=device)
    totals = dist.all_reduce_sum(totals)
    correct1, correct5, entropy, n = totals.tolist()
    return dict(top1_err=round(100 * (1 - correct1 / n), 4), top5_err=round(100 * (1 - correct5 / n), 4),
                entropy=round(entropy / n, 5))


def _per_model(distiller, metrics) -> dict[str, float]:
    """metrics(model) of every eval model; the first (headline) model's unprefixed, all prefixed by name
    when there are several (DML's "net2_top1_err")."""
    out = {}
    models = distiller.eval_models()
    for i, (name, model) in enumerate(models.items()):
        m = metrics(model)
        if i == 0:
            out.update(m)
        if len(models) > 1:
            out.update({f"{name}_{k}": v for k, v in m.items()})
    return out


def evaluate(distiller, loader, autocast) -> dict[str, float]:
    """Top-1/top-5 error and entropy of every eval model (see `_per_model` for the names)."""
    return _per_model(distiller, lambda model: evaluate_model(model, loader, autocast))


def evaluate_retrieval(distiller, splits, autocast) -> dict[str, float]:
    """CMC rank-1/5/10 and mAP (%) of every eval model on a re-ID dataset's query and gallery
    (`DataBundle.retrieval`); every rank scores the whole splits, so no gathering is needed."""
    def score(model) -> dict[str, float]:
        with autocast:
            out = evaluate_reid(model, splits.query, splits.gallery, splits.query_ids, splits.query_cams,
                                splits.gallery_ids, splits.gallery_cams)
        out.pop("valid_queries")
        return out
    return _per_model(distiller, score)


class MetricsLog:
    """The run's per-epoch rows; the CSV is rewritten atomically from them (never half-written)."""

    def __init__(self, path: Path, history: list[dict] | None = None):
        self.path = Path(path)
        self.history = list(history or [])

    def append(self, row: dict) -> None:
        self.history.append(row)

    def write(self) -> None:
        columns: list[str] = []
        for row in self.history:
            columns += [k for k in row if k not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns)
        writer.writeheader()
        writer.writerows(self.history)
        write_atomic(self.path, lambda f: f.write(buf.getvalue().encode()))
