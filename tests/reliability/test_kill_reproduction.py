"""SIGKILL a paper reproduction once its first run has finished, run the same command again: it finishes
the rest without retraining (or touching) the finished run, and runs.csv holds every cell once."""
import time

import pytest

from .common import read_csv, run_cli, start_cli, warm_up

ARGS = ["reproduce", "dml", "--tables", "entropy", "--budget", "smoke", "--device", "cpu", "--no-progress"]


@pytest.mark.slow
def test_a_killed_reproduction_resumes_without_retraining_finished_runs(tmp_path):
    argv = ARGS + ["--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results")]
    warm_up()
    proc = start_cli(argv, tmp_path / "first.log", tmp_path)
    while proc.is_alive() and not list(tmp_path.glob("runs/*/result.json")):
        time.sleep(0.01)
    proc.kill()
    proc.join()
    finished = {p.parent.name: {f.name: f.stat().st_mtime_ns for f in p.parent.iterdir()}
                for p in tmp_path.glob("runs/*/result.json")}
    assert finished, (tmp_path / "first.log").read_text()

    assert run_cli(argv, tmp_path / "second.log", tmp_path) == 0, (tmp_path / "second.log").read_text()
    second = (tmp_path / "second.log").read_text()
    for run_id, files in finished.items():
        assert f"] {run_id} " not in second  # neither trained nor resumed
        assert {f.name: f.stat().st_mtime_ns for f in (tmp_path / "runs" / run_id).iterdir()} == files
    rows = read_csv(tmp_path / "results" / "dml" / "runs.csv")
    keys = [(r["table"], r["label"]) for r in rows]
    assert len(keys) == len(set(keys)) == 2 and all(r["status"] == "finished" for r in rows)
    assert (tmp_path / "results" / "dml" / "entropy.md").is_file()
