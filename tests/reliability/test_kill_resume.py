"""SIGKILL a run at random moments, run the same command again: it resumes and ends exactly where an
uninterrupted run ends (result.json and metrics.csv, timings aside); every file it leaves is complete;
runs.csv holds the run once; a finished run is never touched again."""
import random
import time

import pytest

from .common import check_run_folder, outcome, read_csv, run_args, run_cli, run_folders, start_cli, warm_up

CONFIG = """
paper: rel
table: kill
label: scratch resnet8
model: cifar_resnet8
dataset: synthetic10
batch_size: 32
train_subset: 256
test_subset: 64
seed: 1
train: {length: 3, unit: epoch, optim: {lr: 0.05, milestones: [2]}}
"""
TRIALS = 4


def results_rows(root) -> list[dict]:
    """runs.csv: complete rows, at most one (the run's), and only once it finished."""
    path = root / "results" / "rel" / "runs.csv"
    rows = read_csv(path) if path.exists() else []
    assert len(rows) <= 1 and all(r["status"] == "finished" for r in rows), rows
    return rows


@pytest.mark.slow
def test_random_sigkills_then_rerun_equal_an_uninterrupted_run(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG)
    reference = tmp_path / "reference"
    warm_up()
    assert run_cli(run_args(config, reference), tmp_path / "reference.log", tmp_path) == 0
    (ref_dir,) = run_folders(reference)
    expected = outcome(ref_dir)
    # From the run folder's creation (after validation) to the run's end: checkpoints, metrics, results.
    training = (ref_dir / "result.json").stat().st_mtime - (ref_dir / "config.json").stat().st_mtime

    rng = random.Random(7)
    for trial in range(TRIALS):
        root = tmp_path / f"trial{trial}"
        log = tmp_path / f"trial{trial}.log"
        for _ in range(1 + trial % 2):  # odd trials are killed twice (a resumed run killed again)
            proc = start_cli(run_args(config, root), log, tmp_path)
            while proc.is_alive() and not list(root.glob("runs/*/config.json")):
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 1.1 * training))
            proc.kill()  # SIGKILL
            proc.join()
            for run_dir in run_folders(root):
                check_run_folder(run_dir)
            results_rows(root)
        assert run_cli(run_args(config, root), log, tmp_path) == 0, log.read_text()
        (run_dir,) = run_folders(root)
        check_run_folder(run_dir)
        assert outcome(run_dir) == expected, f"trial {trial}: resumed run differs\n{log.read_text()}"
        assert len(results_rows(root)) == 1
        assert not list(run_dir.glob(".*.tmp*")), "a killed writer's temporary file was left behind"

        # Once finished, the same command changes nothing but the (same) results row.
        model = run_dir / "model.pt"
        stamp = model.stat().st_mtime_ns
        before = log.read_text()
        assert run_cli(run_args(config, root), log, tmp_path) == 0
        assert model.stat().st_mtime_ns == stamp
        rerun = log.read_text()[len(before):]
        assert "[train]" not in rerun and "[resume]" not in rerun
        assert len(results_rows(root)) == 1
