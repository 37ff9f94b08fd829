"""results/ is self-contained: `make report` in a fresh clone (no runs/ folder) re-renders every committed
table, plot and the index byte for byte from results/<paper>/runs.csv and curves.csv."""
import shutil
from pathlib import Path

import pytest

from kd_methods.cli import main

ROOT = Path(__file__).resolve().parents[1]


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


@pytest.mark.slow
def test_a_fresh_clone_report_reproduces_the_committed_results(workdir):
    shutil.copytree(ROOT / "results", workdir / "results")
    committed = files(workdir / "results")
    assert main(["report"]) == 0
    assert not (workdir / "runs").exists()
    rendered = files(workdir / "results")
    assert sorted(rendered) == sorted(committed)
    assert [name for name in committed if rendered[name] != committed[name]] == []
