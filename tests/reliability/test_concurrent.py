"""Two `kd-bench run` processes started together on one config whose teacher is a run too, writing one
runs folder and one results folder: each run is trained exactly once (a lock per run; the second
process waits, then reuses the finished run), and runs.csv holds every row exactly once."""
import json
import re

import pytest

from .common import read_csv, run_args, run_folders, start_cli, warm_up

CONFIG = """
paper: rel
table: concurrent
label: kd student
model: cifar_resnet8
method: kd
dataset: synthetic10
batch_size: 32
train_subset: 128
test_subset: 32
train: {length: 2, unit: epoch, optim: {lr: 0.05}}
teachers:
  - {paper: rel, table: concurrent, label: teacher, model: cifar_resnet14, dataset: synthetic10, batch_size: 32,
     train_subset: 128, test_subset: 32, train: {length: 2, unit: epoch, optim: {lr: 0.05}}}
"""


@pytest.mark.slow
def test_two_processes_on_one_config_train_each_run_once_and_lose_no_rows(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG)
    warm_up()
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [start_cli(run_args(config, tmp_path), log, tmp_path) for log in logs]
    for proc in procs:
        proc.join(600)
    text = [log.read_text() for log in logs]
    assert [p.exitcode for p in procs] == [0, 0], text

    runs = run_folders(tmp_path)
    assert len(runs) == 2  # the teacher's run and the student's
    both = "".join(text)
    for run_dir in runs:
        assert len(re.findall(rf"\[train\] {run_dir.name} ", both)) == 1, both
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert manifest["status"] == "finished" and manifest["resumed"] == 0
    assert "[resume]" not in both
    finals = [re.search(r"^run \S+: top-1 error .*$", t, re.M).group(0) for t in text]
    assert finals[0] == finals[1]  # the second process reports the run the first one trained

    rows = read_csv(tmp_path / "results" / "rel" / "runs.csv")
    assert sorted(r["label"] for r in rows) == ["kd student", "teacher"]
    assert {r["run_id"] for r in rows} == {d.name for d in runs}
    assert all(r["status"] == "finished" for r in rows)
