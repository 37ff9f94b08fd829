"""Evaluation (top-1/top-5 error, mean posterior entropy) and the per-epoch metrics CSV."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import torch

from ..eval_reid import evaluate_reid
from . import distributed as dist
from .checkpoint import write_atomic


@torch.inference_mode()
def evaluate_model(model, loader, autocast) -> dict[str, float]:
    """Errors in % over the whole test set; entropy in nats (DML compares posterior entropies)."""
    was_training = model.training
    model.eval()
    totals = None
    for images, targets in loader:
        with autocast:
            logits = model(images)
        logits = logits.float()
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hit = top5 == targets[:, None]
        logp = logits.log_softmax(dim=1)
        batch = torch.stack([hit[:, 0].sum().float(), hit.any(dim=1).sum().float(),
                             -(logp.exp() * logp).sum(dim=1).sum(),
                             torch.tensor(float(targets.numel()), device=logits.device)])
        totals = batch if totals is None else totals + batch
    model.train(was_training)
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
