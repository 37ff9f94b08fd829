"""Markdown for one paper table and for the results index."""
from __future__ import annotations

from pathlib import Path

from ..engine.checkpoint import write_atomic
from ..runs.spec import BUDGETS

NOT_TRANSCRIBED = "paper value not transcribed"
METRIC_NAMES = {"mAP": "mAP (%)", "rank1": "CMC rank-1 (%)", "loss_rec": "paraphraser reconstruction loss",
                "top1_error": "top-1 error (%)", "top1_acc": "top-1 accuracy (%)", "top5_error": "top-5 error (%)",
                "entropy": "mean posterior entropy (nats)", "top1_acc_gain": "accuracy gain (points)"}


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: f.write(text.encode()))


def to_paper_metric(value: float, ours_metric: str, paper_metric: str) -> float:
    """Our errors shown in the paper's unit (accuracy = 100 - error)."""
    if paper_metric.endswith("acc") and ours_metric.endswith("_err"):
        return 100.0 - value
    return value


def _fmt(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def format_cell(summary: dict, ref: dict | None, paper_metric: str, budget: str | None,
                comparable: bool = True, paper_values: bool = True) -> str:
    """Ours (mean ± std, n), the paper's value, and the difference; no difference for smoke or synthetic
    runs (`comparable` False), whose numbers must not be read against the paper's."""
    cell = summary["cell"]
    if summary["n"]:
        mean = to_paper_metric(summary["mean"], cell.metric, paper_metric)
        ours = f"**{_fmt(mean)}** ± {_fmt(summary['std'])} (n={summary['n']})"
    else:
        ours = f"*{summary['reason']}*"
    if not paper_values:  # a table of our own (the claims benchmark): nothing to compare with
        paper, diff = "", ""
    elif ref is None or ref["value"] is None:  # not read yet, or (the notes say why) no such value exists
        exists = ref is None or "not transcribed" in ref["note"] or not ref["note"]
        paper = f"paper: *{NOT_TRANSCRIBED}*" if exists else "paper: *none (see the notes)*"
        diff = ""
    else:
        paper = f"paper: {_fmt(ref['value'])}"
        diff = (f"Δ {mean - ref['value']:+.2f}" if summary["n"] and comparable else "")
    return "<br>".join(p for p in (ours, paper, diff) if p)


def _cell_specs(table):
    """Every spec a table trains: its cells' specs and, recursively, their teachers' and the runs their
    students start from (a generation's patriarch is trained with the TSD term, say)."""
    todo = [spec for c in table.cells for spec in c.specs]
    while todo:
        spec = todo.pop()
        yield spec
        todo += [t for t in [*getattr(spec, "teachers", []), getattr(spec, "init", None)] if hasattr(t, "method")]


def _provenance_rows(table, ran_methods: set[str]) -> list[dict]:
    """Non-paper hyper-parameters and deviations of every method the table uses, with each cell's own
    method_args applied (a value a cell overrides shows as source "config")."""
    from ..methods import METHODS
    uses = {(spec.method, repr(sorted(spec.method_args.items()))): spec.method_args for spec in _cell_specs(table)}
    uses.update({(m, "[]"): {} for m in ran_methods if not any(k[0] == m for k in uses)})
    rows, seen = [], set()
    for (method, _), args in sorted(uses.items()):
        if method not in METHODS:
            continue
        for r in METHODS.get(method).provenance(args):
            key = (r["method"], r["name"], repr(r["value"]), r["source"], r["note"])
            if r["source"] != "paper" and key not in seen:
                seen.add(key)
                rows.append(r)
    return rows


def _fmt_diff(c: dict) -> str:
    unit = "iterations" if c["kind"] == "iterations" else "points"
    digits = 0 if c["kind"] == "iterations" else 2
    if c["diff"] is None:
        return "—"
    ci = f" [{c['low']:+.{digits}f}, {c['high']:+.{digits}f}]" if c["low"] is not None else " (no interval: n < 2)"
    return f"{c['diff']:+.{digits}f} {unit}{ci}"


def _fmt_arm(mean, std, kind: str) -> str:
    if mean is None:
        return "*not run*"
    digits = 0 if kind == "iterations" else 2
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def render_comparisons(comparisons: list[dict], testable: bool) -> list[str]:
    """The claims section: both arms, the paired difference with its 95% interval, and the verdict
    (none for smoke/synthetic runs, which test the pipeline, not the claim)."""
    lines = ["", "## Claims, paired by seed", "",
             "Each difference is taken so that a positive value supports the claim (errors: the other arm's "
             "minus the claimed better arm's; iterations: how many fewer). 95% interval: Student's t over the "
             "seeds' paired differences. Verdict: **holds** if the interval is above zero, **reversed** if "
             "below, **inconclusive** otherwise.", "",
             "| claim | better arm | other arm | paired difference (95% CI) | n | verdict |", "|---|---|---|---|---|---|"]
    for c in comparisons:
        what = "iterations to reach the other arm's final error / its iterations" if c["kind"] == "iterations" \
            else "error (%)"
        v = f"**{c['verdict']}**" if testable and c["n"] else ("— (smoke/synthetic: not a test of the claim)"
                                                             if c["n"] else "— (not run)")
        note = f"<br>{c['note']}" if c["note"] else ""
        lines.append(f"| {c['claim']} ({what}) | {c['better']}: {_fmt_arm(c['better_mean'], c['better_std'], c['kind'])} "
                     f"| {c['than']}: {_fmt_arm(c['than_mean'], c['than_std'], c['kind'])} | {_fmt_diff(c)}{note} "
                     f"| {c['n']} | {v} |")
    return lines


def render_table_markdown(paper, table, summaries: dict, refs: dict, budget: str | None,
                          comparisons: list[dict] = ()) -> str:
    ran = [r for s in summaries.values() for r in s["rows"]]
    datasets = sorted({r["dataset"] for r in ran})
    devices = sorted({r["device"] for r in ran if r.get("device")})
    synthetic = any(d.startswith("synthetic") for d in datasets)
    lines = [f"# {paper.title} — {table.title}", ""]
    if budget is None:
        lines += ["**No finished runs yet.** Run `make reproduce-" + paper.key + "` to fill this table.", ""]
    else:
        b = BUDGETS[budget]
        lines += [f"- **Budget:** `{budget}` — {b.description}",
                  f"- **Data:** {', '.join(datasets) or '—'}",
                  f"- **Hardware:** {'; '.join(devices) or '—'}",
                  f"- **Runs:** {len(ran)} finished; cells show mean ± sample std over seeds (n)."]
        if budget == "smoke" or synthetic:
            lines += ["", "> **Smoke/synthetic numbers.** These runs check that the pipeline works end to end; "
                          "they are not a reproduction of the paper and must not be compared with its values."]
    paper_values = getattr(table, "paper_values", True)
    smoke = synthetic or budget == "smoke"
    if paper_values:
        lines += ["", f"Metric: {METRIC_NAMES.get(table.paper_metric, table.paper_metric)}; each cell: ours, the "
                      f"paper's value, and ours − paper{' (not shown for smoke/synthetic runs)' if smoke else ''}.", ""]
    else:
        lines += ["", f"Metric: {METRIC_NAMES.get(table.paper_metric, table.paper_metric)}; each cell: mean ± "
                      f"sample std over seeds (n).", ""]
    lines.append("| | " + " | ".join(table.cols) + " |")
    lines.append("|---" * (len(table.cols) + 1) + "|")
    for row in table.rows:
        cells = []
        for col in table.cols:
            s = summaries.get((row, col))
            cells.append(format_cell(s, refs.get((table.key, row, col)), table.paper_metric, budget,
                                     comparable=not smoke, paper_values=paper_values) if s else "")
        lines.append(f"| **{row}** | " + " | ".join(cells) + " |")
    if comparisons:
        lines += render_comparisons(list(comparisons), testable=budget is not None and not smoke)
    sources = sorted({r["source"] for k, r in refs.items() if k[0] == table.key and r["source"]})
    notes = [r["note"] for k, r in refs.items() if k[0] == table.key and r["note"]]
    if sources:
        lines += ["", "Paper values from: " + "; ".join(sources) + "."]
    for n in list(table.notes) + sorted(set(notes)):
        lines.append(f"- {n}")
    if paper.protocol_notes:
        lines += ["", "## Protocol", ""] + [f"- {n}" for n in paper.protocol_notes]
    prov = _provenance_rows(table, {r["method"] for r in ran})
    if prov:
        lines += ["", "## Assumed values and deviations", "", "| method | name | value | source | note |",
                  "|---|---|---|---|---|"]
        lines += [f"| {p['method']} | {p['name']} | {p['value']} | {p['source']} | {p['note']} |" for p in prov]
    return "\n".join(lines) + "\n"


def render_index(results_dir: Path, papers: list) -> str:
    """`papers`: (paper, [(table, status)]) with status from `kd_methods.report.table_status`."""
    lines = ["# Results", "",
             "Generated by `make reproduce-<paper>` / `make report` from `results/<paper>/runs.csv`. Each "
             "table's page states the budget, data and hardware that produced it. **Smoke and synthetic "
             "numbers check the pipeline and are not reproductions**: their distance to the paper is not "
             "shown here.", "",
             "| paper | table | budget | data | hardware | cells run | mean abs. Δ vs paper | report |",
             "|---|---|---|---|---|---|---|---|"]
    for paper, tables in papers:
        for table, st in tables:
            smoke = st["budget"] == "smoke" or any(d.startswith("synthetic") for d in st["datasets"])
            if st.get("claims"):
                counts = {v: st["verdicts"].count(v) for v in dict.fromkeys(st["verdicts"])}
                delta = ("claims: " + ", ".join(f"{n} {v}" for v, n in counts.items())
                         if counts and not smoke else f"{st['claims']} claims, no verdict"
                         + (" (smoke/synthetic)" if smoke and st["ran"] else ""))
            elif not st["transcribed"]:
                delta = "paper values not transcribed"
            elif smoke or st["budget"] is None:
                delta = "—"
            else:
                delta = f"{st['mean_abs_delta']:.2f} over {st['compared']} cells" if st["compared"] else "—"
            budget = st["budget"] if st["ran"] else st["not_run"]
            lines.append(f"| {paper.key} | {table.key} | {budget} | "
                         f"{', '.join(st['datasets']) or '—'} | {'; '.join(st['devices']) or '—'} | "
                         f"{st['ran']} / {st['cells']} | {delta} | [{table.key}.md]({paper.key}/{table.key}.md) |")
    plots = [(paper.key, p.key) for paper, _ in papers for p in paper.plots
             if (results_dir / paper.key / f"{p.key}.png").is_file()]
    if plots:
        lines += ["", "Plots: " + ", ".join(f"[{k}/{name}]({k}/{name}.png)" for k, name in plots) + "."]
    bench = results_dir / "bench" / "README.md"
    if bench.is_file():
        lines += ["", "Speed: [bench/README.md](bench/README.md)."]
    return "\n".join(lines) + "\n"
