"""A reproduction as a graph of runs: each run once, after the runs it learns from.

The cells of a paper's tables name experiment specs; a spec's teachers are specs too, so the cells
resolve to a directed acyclic graph whose nodes are runs (one per run id, however many cells, tables or
papers name it) and whose edges go from a teacher's run to its students'. Executors only decide where
and when each node trains (`kd_methods.runs.executors`); `kd-bench plan` prices it (`cost`).

`records` keeps the runs.csv rows the reproduction owes, in the order the sequential runner writes
them: one per (run, table, label), the config carrying its labels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

from .spec import upstream


@dataclass
class Node:
    cfg: dict                       # the resolved config (labels of the first cell that names it)
    deps: list[str]                 # run ids it needs finished: its teachers', its init run (not pretrained files)
    tables: list[str] = field(default_factory=list)   # tables whose cells name it, directly or as a teacher


@dataclass
class RunGraph:
    nodes: dict[str, Node] = field(default_factory=dict)   # in a teachers-first order
    records: list[dict] = field(default_factory=list)      # labelled configs, one per runs.csv row
    _rows: set = field(default_factory=set, repr=False)

    @classmethod
    def from_cells(cls, paper: str, planned: Iterable, blocked: bool = False) -> "RunGraph":
        """From `plan_cells` output, (table, cell, cfgs, why) with why '' for a cell that can run here
        (`blocked`: the cells that cannot too, for a plan); each cell's configs are labelled (paper,
        table, cell label) as its runs.csv rows are."""
        from .tables import cell_label

        graph = cls()
        for table, cell, cfgs, why in planned:
            if why and not blocked:
                continue
            for cfg in cfgs:
                graph.add(dict(cfg, labels=dict(paper=paper, table=table.key, label=cell_label(cell))), table.key)
        return graph

    def add(self, cfg: dict, table: str = "") -> None:
        """Add run `cfg` (and the runs it needs first: its teachers', the one its student starts from); a
        config labelled with a paper owes a row."""
        for dependency in upstream(cfg):
            self.add(dependency, table)
        labels = cfg.get("labels") or {}
        row = cfg["run_id"], labels.get("table", ""), labels.get("label", "")
        if labels.get("paper") and row not in self._rows:
            self._rows.add(row)
            self.records.append(cfg)
        node = self.nodes.get(cfg["run_id"])
        if node is None:
            node = self.nodes[cfg["run_id"]] = Node(cfg, [d["run_id"] for d in upstream(cfg)])
        if table and table not in node.tables:
            node.tables.append(table)

    def dependents(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {run_id: [] for run_id in self.nodes}
        for run_id, node in self.nodes.items():
            for d in node.deps:
                out[d].append(run_id)
        return out

    def longest_path(self, weight: Callable[[str], float]) -> tuple[list[str], float]:
        """The chain teacher -> ... -> student of the largest total `weight` (e.g. seconds still to train):
        no number of devices finishes the graph sooner."""
        best: dict[str, tuple[float, str | None]] = {}
        for run_id, node in self.nodes.items():  # teachers come before their students
            before = max(((best[d][0], d) for d in node.deps), default=(0.0, None))
            best[run_id] = (before[0] + weight(run_id), before[1])
        if not best:
            return [], 0.0
        end = max(best, key=lambda r: best[r][0])
        path, at = [], end
        while at is not None:
            path.append(at)
            at = best[at][1]
        return path[::-1], best[end][0]

