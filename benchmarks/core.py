"""The types a paper module fills in (from `kd_methods.runs.tables`), and where its published numbers live.

Reference values (the paper's numbers) live in `benchmarks/references/<paper>.csv`, one row per published
number, keyed by (table, row, col); a missing value reads "paper value not transcribed". `get_paper`
hands them to the report as `Paper.references`.
"""
from __future__ import annotations

from pathlib import Path

from kd_methods.runs.tables import (Cell, Comparison, Paper, Plot, Table, cell_label, cell_specs,
                                    dataset_available, generations, labelled, plan_cells, read_references, seeds)

REFERENCES = Path(__file__).parent / "references"

plan = plan_cells  # the name the paper tests use


def load_references(paper: str) -> dict[tuple[str, str, str], dict]:
    """(table, row, col) -> {value, metric, source, note}; value None where not transcribed."""
    return read_references(REFERENCES / f"{paper}.csv")


__all__ = ["Cell", "Comparison", "Paper", "Plot", "Table", "cell_label", "cell_specs", "dataset_available", "generations",
           "labelled", "load_references", "plan", "plan_cells", "seeds", "REFERENCES"]
