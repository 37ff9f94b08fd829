"""`--executor ray` on a local Ray instance of 2 CPUs (shared by the tests of this module: Ray takes seconds
to start): the same runs and runs.csv rows as the sequential executor; no student before its teachers;
a worker SIGKILLed mid-run is retried and resumes to the numbers of an uninterrupted run; a run that
fails leaves the runs independent of it finished and the reproduction's exit code non-zero."""
import json
import os
import signal
import threading
import time

import pytest
import torch

from kd_methods.cli import main
from kd_methods.errors import RunsFailed
from kd_methods.runs.executors.ray_executor import RayExecutor
from kd_methods.runs.reproduce import reproduce
from kd_methods.runs.runner import RunContext
from kd_methods.runs.spec import ExperimentSpec, Optim, Phase
from kd_methods.runs.store import RunStore
from kd_methods.runs.tables import Cell, Paper, Table

from reliability.common import outcome, read_csv, run_folders

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance with 2 CPUs for the module (workers inherit this process's PYTHONPATH)."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def one_thread():
    """Sequential runs on one thread, as each Ray task (--cpus-per-run 1): the same arithmetic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def cli_args(root, *extra):
    return ["reproduce", "fitnets", "--tables", "table4", "--budget", "smoke", "--device", "cpu",
            "--no-progress", "--runs-dir", str(root / "runs"), "--results-dir", str(root / "results"), *extra]


def rows_without_timing(root):
    rows = read_csv(root / "results" / "fitnets" / "runs.csv")
    return [{k: v for k, v in r.items() if k not in ("wall_s", "finished_at")} for r in rows]


def test_a_ray_reproduction_equals_the_sequential_one(local_ray, tmp_path, one_thread):
    assert main(cli_args(tmp_path / "seq")) == 0
    assert main(cli_args(tmp_path / "ray", "--executor", "ray", "--cpus-per-run", "1")) == 0

    seq, par = run_folders(tmp_path / "seq"), run_folders(tmp_path / "ray")
    assert [d.name for d in seq] == [d.name for d in par] and len(seq) == 5  # teacher + 4 students
    for a, b in zip(seq, par):
        assert outcome(a) == outcome(b), a.name  # result.json and every epoch's metrics
    rows = rows_without_timing(tmp_path / "ray")
    assert rows == rows_without_timing(tmp_path / "seq")  # same rows, same order
    keys = [(r["run_id"], r["table"], r["label"]) for r in rows]
    assert len(keys) == len(set(keys)) == 5 and all(r["status"] == "finished" for r in rows)
    assert (tmp_path / "ray" / "results" / "fitnets" / "table4.md").is_file()

    # No student started before its teacher finished: its folder was created after the teacher's result.
    runs = tmp_path / "ray" / "runs"
    for student in par:
        cfg = json.loads((student / "config.json").read_text())
        for t in cfg["teachers"]:
            if "run_id" in t:
                teacher_done = (runs / t["run_id"] / "result.json").stat().st_mtime_ns
                assert (student / "config.json").stat().st_mtime_ns >= teacher_done, student.name


def tiny(seed=0, method="scratch", teachers=(), lr=Optim(lr=0.05, schedule="constant"), epochs=6):
    return ExperimentSpec(model="cifar_resnet8", method=method, teachers=list(teachers), dataset="synthetic10",
                          batch_size=32, train_subset=256, test_subset=64, seed=seed,
                          train=Phase(epochs, "epoch", lr))


def paper_of(*cells):
    return Paper("rel", "Ray test", "-", [Table("t", "t", list(cells))])


def test_a_worker_killed_mid_run_is_retried_and_resumes_to_the_uninterrupted_numbers(local_ray, tmp_path,
                                                                                      one_thread):
    teacher = tiny(seed=3)
    paper = paper_of(Cell("student", "kd", [tiny(seed=4, method="kd", teachers=[teacher])]))
    reference = tmp_path / "ref"
    reproduce(paper, ctx=RunContext(store=RunStore(reference / "runs"), results_dir=reference / "results",
                                    log=lambda m: None))

    ctx = RunContext(store=RunStore(tmp_path / "runs"), results_dir=tmp_path / "results", log=lambda m: None)
    errors = []

    def work():
        try:
            reproduce(paper, ctx=ctx, executor=RayExecutor(cpus_per_run=1))
        except Exception as e:  # reported below
            errors.append(e)
    thread = threading.Thread(target=work)
    thread.start()
    killed = None
    deadline = time.time() + 300
    while thread.is_alive() and killed is None and time.time() < deadline:
        for run_dir in run_folders(tmp_path):
            manifest = run_dir / "manifest.json"
            if (run_dir / "last.pt").exists() and not (run_dir / "result.json").exists() and manifest.exists():
                os.kill(json.loads(manifest.read_text())["pid"], signal.SIGKILL)  # the Ray worker training it
                killed = run_dir.name
                break
        time.sleep(0.005)
    thread.join(300)
    assert not errors and killed, (errors, killed)

    run_dir = tmp_path / "runs" / killed
    assert json.loads((run_dir / "manifest.json").read_text())["resumed"] >= 1  # retried, from its checkpoint
    names = [d.name for d in run_folders(tmp_path)]
    assert names == [d.name for d in run_folders(reference)] and len(names) == 2
    for name in names:
        assert outcome(tmp_path / "runs" / name) == outcome(reference / "runs" / name), name


def test_a_failing_run_stops_only_the_runs_that_learn_from_it(local_ray, tmp_path):
    diverges = tiny(seed=5, lr=Optim(lr=0.05, schedule="multistep", milestones=[1], gamma=1e30), epochs=3)
    good = tiny(seed=6, epochs=2)
    paper = paper_of(Cell("diverges", "x", [diverges]), Cell("student", "x", [tiny(seed=7, method="kd",
                                                                                  teachers=[diverges], epochs=2)]),
                     Cell("independent", "x", [good]))
    ctx = RunContext(store=RunStore(tmp_path / "runs"), results_dir=tmp_path / "results", log=lambda m: None)
    with pytest.raises(RunsFailed) as failed:
        reproduce(paper, ctx=ctx, executor=RayExecutor(cpus_per_run=1))
    assert failed.value.code == 3  # a divergence (README "Exit codes")
    assert "2 of 3 runs did not finish" in str(failed.value)

    rows = {r["label"]: r for r in read_csv(tmp_path / "results" / "rel" / "runs.csv")}
    assert rows["independent | x"]["status"] == "finished"
    assert rows["diverges | x"]["status"] == "failed"
    assert "student | x" not in rows  # never trained: its teacher did not finish
    folders = {d.name: d for d in run_folders(tmp_path)}
    assert len(folders) == 2  # the student's run was not even started
    finished = [d for d in folders.values() if (d / "result.json").exists()]
    assert len(finished) == 1 and json.loads((finished[0] / "manifest.json").read_text())["status"] == "finished"


def test_the_command_exits_with_the_code_of_the_failure_and_one_line(monkeypatch, capsys, workdir):
    import benchmarks

    def fails(*args, **kwargs):
        raise RunsFailed("1 of 4 runs did not finish (diverged; listed above); the others finished.", 3)
    monkeypatch.setattr(benchmarks, "reproduce", fails)
    assert main(["reproduce", "dml", "--budget", "smoke", "--executor", "ray"]) == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("kd-bench: 1 of 4 runs did not finish") and len(err.splitlines()) == 1


def test_ray_options_without_the_ray_executor_are_bad_input(workdir, capsys):
    assert main(["reproduce", "dml", "--budget", "smoke", "--gpus-per-run", "0.25"]) == 2
    err = capsys.readouterr().err
    assert "--gpus-per-run only applies to --executor ray" in err and not (workdir / "runs").exists()
