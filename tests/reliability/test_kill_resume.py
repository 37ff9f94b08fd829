"""SIGKILL a run at random moments, run the same command again: it resumes and ends exactly where an
uninterrupted run ends (result.json and metrics.csv, timings aside); every file it leaves is complete;
runs.csv holds the run once; a finished run is never touched again. A rerun that found a checkpoint keeps
the killed process's epochs as they were (it resumed), and at least one trial resumes mid-run."""
import random
import time

import pytest

from kd_methods.engine.checkpoint import load_checkpoint

from .common import (assert_epochs_kept, check_run_folder, outcome, read_csv, run_args, run_cli, run_folders,
                     start_cli, warm_up)

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
    resumed_mid_run = 0
    for trial in range(TRIALS):
        root = tmp_path / f"trial{trial}"
        log = tmp_path / f"trial{trial}.log"
        # Trial 0 is killed as soon as its first checkpoint is written, so at least one rerun resumes mid-run
        # whatever the machine's speed; the others die at random moments (before it: a fresh rerun).
        ready = "runs/*/metrics.csv" if trial == 0 else "runs/*/config.json"
        for _ in range(1 + trial % 2):  # odd trials are killed twice (a resumed run killed again)
            proc = start_cli(run_args(config, root), log, tmp_path)
            while proc.is_alive() and not list(root.glob(ready)):
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 1.1 * training) if trial else 0.0)
            proc.kill()  # SIGKILL
            proc.join()
            for run_dir in run_folders(root):
                check_run_folder(run_dir)
            results_rows(root)
        found = [load_checkpoint(d / "last.pt") for d in run_folders(root)]  # what the rerun starts from
        done = len(found[0]["history"]) if found and found[0] else 0
        assert run_cli(run_args(config, root), log, tmp_path) == 0, log.read_text()
        (run_dir,) = run_folders(root)
        check_run_folder(run_dir)
        assert outcome(run_dir) == expected, f"trial {trial}: resumed run differs\n{log.read_text()}"
        if 0 < done < len(expected[1]):  # resumed mid-run: the killed process's epochs are kept, not retrained
            resumed_mid_run += 1
            assert_epochs_kept(run_dir, found[0])
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
    assert resumed_mid_run >= 1
