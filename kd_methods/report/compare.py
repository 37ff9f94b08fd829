"""Claims tested on runs: paired differences by seed, their 95% confidence interval, and a verdict.

A comparison (see `benchmarks.core.Comparison`) says that one cell of a table (`better`) beats another
(`than`). Each run of `than` pairs with the run of `better` trained with the same seed (plus the
comparison's `seed_offset`), so what varies between seeds (initialisation, data order) cancels out. For
every pair the difference is taken so that a positive value supports the claim:

- kind "final": than's metric minus better's (every metric compared is an error, lower is better);
- kind "iterations": than's iterations in its stage minus the iterations better's stage needed to reach
  than's final error (evaluated after every epoch, so counted in whole epochs; a run that never reaches
  it counts all its iterations).

The interval is Student's t: mean +- t_{0.975, n-1} * sd / sqrt(n). The verdict is "holds" when the whole
interval is above zero, "reversed" when it is below, and "inconclusive" otherwise (or with fewer than two
pairs). Nothing here knows any claim's answer: a verdict exists only where both arms have finished runs.
"""
from __future__ import annotations

import math
import statistics
from typing import Callable

HOLDS, REVERSED, INCONCLUSIVE = "holds", "reversed", "inconclusive"


def t_interval(diffs: list[float], level: float = 0.95) -> tuple[float | None, float | None, float | None]:
    """(mean, low, high) of the mean difference; low/high None with fewer than two differences."""
    if not diffs:
        return None, None, None
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return mean, None, None
    from scipy.stats import t
    half = t.ppf((1 + level) / 2, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return mean, mean - half, mean + half


def verdict(low: float | None, high: float | None) -> str:
    if low is None or high is None:
        return INCONCLUSIVE
    return HOLDS if low > 0 else REVERSED if high < 0 else INCONCLUSIVE


def _cell_summary(summaries: dict, row: str, col: str | None) -> dict:
    found = [s for (r, c), s in summaries.items() if r == row and col in (None, c)]
    if len(found) != 1:
        where = f"row {row!r}" + (f", column {col!r}" if col else " (name a column)")
        raise KeyError(f"comparison names {where}, which the table has {len(found)} times")
    return found[0]


def _by_seed(summary: dict, metric_value: Callable) -> dict[int, tuple[dict, float]]:
    metric = summary["cell"].metric
    out = {}
    for r in summary["rows"]:
        value = metric_value(r, metric)
        if value is not None:
            out[int(r["seed"])] = (r, value)
    return out


def iterations_to_reach(curve: list[dict], stage: str, metric: str, target: float) -> tuple[float, bool]:
    """(iterations, reached): the first evaluated iteration of `stage` whose `metric` is at most
    `target`, else the stage's last iteration and False."""
    rows = [r for r in curve if r.get("stage") == stage and isinstance(r.get(metric), (int, float))]
    for r in rows:
        if r[metric] <= target:
            return r["stage_iteration"], True
    return (rows[-1]["stage_iteration"] if rows else math.nan), False


def compare(comparison, summaries: dict, metric_value: Callable, curve: Callable[[str], list[dict]]) -> dict:
    """One comparison's record: both arms' mean and sample std over the paired seeds, the paired
    difference's mean and 95% interval, n, the verdict, and a note (e.g. runs that never reached)."""
    better, than = (_cell_summary(summaries, row, comparison.col) for row in (comparison.better, comparison.than))
    b_runs, t_runs = _by_seed(better, metric_value), _by_seed(than, metric_value)
    pairs = [(t_runs[s], b_runs[s + comparison.seed_offset]) for s in sorted(t_runs)
             if s + comparison.seed_offset in b_runs]
    note = ""
    if comparison.kind == "final":
        b_vals = [b for _, (_, b) in pairs]
        t_vals = [t for (_, t), _ in pairs]
    elif comparison.kind == "iterations":
        b_vals, t_vals, missed = [], [], 0
        for (t_row, t_final), (b_row, _) in pairs:
            t_curve = curve(t_row["run_id"])
            t_rows = [r for r in t_curve if r.get("stage") == comparison.stage]
            reached_at, reached = iterations_to_reach(curve(b_row["run_id"]), comparison.stage,
                                                      better["cell"].metric, t_final)
            if not t_rows or math.isnan(reached_at):
                continue  # curves not available (e.g. runs trained elsewhere): no pair
            b_vals.append(reached_at)
            t_vals.append(t_rows[-1]["stage_iteration"])
            missed += not reached
        if missed:
            note = f"{missed} of {len(b_vals)} runs never reached it (counted with all their iterations)"
    else:
        raise ValueError(f"unknown comparison kind {comparison.kind!r}")
    diffs = [t - b for t, b in zip(t_vals, b_vals)]
    mean, low, high = t_interval(diffs)

    def stats(values):
        return (statistics.fmean(values) if values else None,
                statistics.stdev(values) if len(values) > 1 else (0.0 if values else None))

    (b_mean, b_std), (t_mean, t_std) = stats(b_vals), stats(t_vals)
    return dict(claim=comparison.claim, better=comparison.better, than=comparison.than, kind=comparison.kind,
                n=len(diffs), better_mean=b_mean, better_std=b_std, than_mean=t_mean, than_std=t_std,
                diff=mean, low=low, high=high, verdict=verdict(low, high), note=note)
