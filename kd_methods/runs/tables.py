"""A paper's tables as data, and the cells' runs at a budget.

A `Table` is a grid of `Cell`s; a cell lists the experiment specs whose runs it averages (one per seed)
and the metric it shows. Teachers are specs inside the students' specs, so a teacher named by several
cells, tables or papers is one run. A `Paper` carries its tables, plots, protocol notes and the values
it published (`references`); `benchmarks/<paper>.py` fills these types in, the runner and the report
read them. `plan_cells` resolves every cell's specs at a budget and says why a cell cannot run.
"""
from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .spec import NEEDS_REAL_DATA, ExperimentSpec, get_budget, resolve, walk


@dataclass
class Cell:
    row: str
    col: str
    specs: list[ExperimentSpec]         # one per seed; the cell shows mean +- std over their runs
    metric: str = "top1_err"            # a column of result.json / runs.csv ("net2_top1_err", "entropy", ...)
    note: str = ""


@dataclass(frozen=True)
class Comparison:
    """A claim tested on a table's runs, paired by seed: `better` (a row of the table) beats `than`.

    kind "final": the difference is than's metric minus better's (errors: positive when better is lower),
    per seed. kind "iterations": how many fewer iterations of its stage `stage` better needs to reach than's
    final metric than than trained for. Run `s` of `than` pairs with the run of seed `s + seed_offset` of
    `better` (a generation trained with a seed of its own still pairs with its parent's seed). `col`: the
    column compared, where the rows have several cells.
    """
    claim: str
    better: str
    than: str
    kind: str = "final"                 # final | iterations
    stage: str = "train"                # kind "iterations": the stage whose iterations count
    seed_offset: int = 0
    col: str | None = None


@dataclass
class Table:
    key: str                            # "table2": file name of the report, --tables filter
    title: str                          # "Table 2: CIFAR-100, ensembles of 5 teachers"
    cells: list[Cell]
    rows: list[str] = field(default_factory=list)   # display order (default: first appearance)
    cols: list[str] = field(default_factory=list)
    paper_metric: str = "top1_error"    # how the paper prints it: top1_error | top1_acc | entropy
    notes: list[str] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)   # claims tested on the runs, with verdicts
    paper_values: bool = True           # False: a table of our own (the claims), no paper column

    def __post_init__(self):
        if not self.rows:
            self.rows = list(dict.fromkeys(c.row for c in self.cells))
        if not self.cols:
            self.cols = list(dict.fromkeys(c.col for c in self.cells))


@dataclass
class Plot:
    """A figure made from finished runs: `draw(paper, rows, budget, curves, path)` (rows of runs.csv,
    curves: run_id -> per-epoch rows from curves.csv). `tables`: the
    tables it draws from, whose most faithful budget it shows (empty: every table of the paper)."""
    key: str
    title: str
    draw: Callable
    tables: tuple[str, ...] = ()


@dataclass
class Paper:
    key: str                            # feed | dml | fitnets | fsp | tsd
    title: str
    citation: str
    tables: list[Table]
    plots: list[Plot] = field(default_factory=list)
    protocol_notes: list[str] = field(default_factory=list)
    # (table, row, col) -> {value, metric, source, note}: the paper's numbers (`read_references`)
    references: dict = field(default_factory=dict)


def seeds(spec: ExperimentSpec, n: int) -> list[ExperimentSpec]:
    """n copies of a spec differing only in their seed (0..n-1)."""
    return [dataclasses.replace(spec, seed=s) for s in range(n)]


def labelled(spec: ExperimentSpec, paper: str, table: str, label: str) -> ExperimentSpec:
    return dataclasses.replace(spec, paper=paper, table=table, label=label)


def generations(patriarch: ExperimentSpec, student: Callable[[ExperimentSpec, int], ExperimentSpec],
                n: int) -> list[ExperimentSpec]:
    """[gen 0, gen 1, ..., gen n]: generation m is `student(gen m-1, m)`, whose teacher is gen m-1's run."""
    chain = [patriarch]
    for m in range(1, n + 1):
        chain.append(student(chain[-1], m))
    return chain


def cell_label(cell: Cell) -> str:
    """How a cell's runs are labelled in runs.csv (with the table's key)."""
    return f"{cell.row} | {cell.col}"


def read_references(path: Path) -> dict[tuple[str, str, str], dict]:
    """A paper's published numbers from a CSV with columns table,row,col,value,metric,source,note:
    (table, row, col) -> {value, metric, source, note}; value None where not transcribed."""
    out = {}
    if not Path(path).is_file():
        return out
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            value = r["value"].strip()
            out[(r["table"], r["row"], r["col"])] = dict(
                value=float(value) if value else None, metric=r["metric"], source=r["source"], note=r["note"])
    return out


def dataset_available(dataset: str, data_root: str) -> bool:
    root = Path(data_root)
    marker = {"imagenet": root / "imagenet" / "train", "cub200": root / "cub200" / "CUB_200_2011",
              "market1501": root / "market1501" / "bounding_box_train"}.get(dataset)
    return marker is None or marker.exists()


def cell_specs(cell: Cell, budget: str, seeds: int | None = None) -> list[ExperimentSpec]:
    """The cell's specs the budget trains: its first `seeds` (default: the budget's cap, if any)."""
    cap = seeds or get_budget(budget).max_seeds
    return cell.specs[:cap] if cap else list(cell.specs)


def plan_cells(paper: Paper, budget: str, data: str, data_root: str, tables=None,
               seeds: int | None = None) -> list[tuple[Table, Cell, list[dict], str]]:
    """Every cell with its resolved configs, and why it cannot run ('' when it can). `seeds` overrides
    the budget's cap on seeds per cell (a cell never trains more seeds than it lists)."""
    unknown = [t for t in tables or () if t not in {table.key for table in paper.tables}]
    if unknown:
        from ..errors import ConfigError
        from ..registry import closest
        raise ConfigError(f"{paper.key} has no table '{unknown[0]}'{closest(unknown[0], [t.key for t in paper.tables])}; "
                          f"its tables are {', '.join(t.key for t in paper.tables)}")
    chosen = [t for t in paper.tables if not tables or t.key in tables]
    out = []
    for table in chosen:
        for cell in table.cells:
            cfgs = [resolve(s, budget, data=data, data_root=data_root) for s in cell_specs(cell, budget, seeds)]
            out.append((table, cell, cfgs, missing_inputs(cfgs, data_root)))
    return out


def missing_inputs(cfgs: list[dict], data_root: str) -> str:
    """Why runs `cfgs` (and their teachers) cannot run here: datasets or weights files not present."""
    missing = sorted({c["dataset"] for c in walk(cfgs)
                      if c["dataset"] in NEEDS_REAL_DATA and not dataset_available(c["dataset"], data_root)})
    weights = sorted({path for c in walk(cfgs) for path in _weights_files(c) if not Path(path).is_file()})
    reasons = []
    if missing:
        reasons.append(f"needs {', '.join(missing)} under {data_root}/ (not present)")
    if weights:
        reasons.append(f"needs pretrained weights {', '.join(weights)} (not present)")
    return "; ".join(reasons)


def _weights_files(cfg: dict) -> list[str]:
    """The weights files a run reads: pretrained teachers and an init file."""
    init = cfg.get("init")
    return ([t["pretrained"]["path"] for t in cfg["teachers"] if "pretrained" in t]
            + ([init["path"]] if init and "path" in init else []))