"""Kill and resume for methods with more state than a student: DML's peers, FEED's NTLs beside two frozen
teachers, FT's paraphraser (its own stage) and translator. SIGKILL right after the checkpoint of epoch k,
the same command again: the rerun starts from that checkpoint (it keeps the killed process's epochs) and
ends exactly where an uninterrupted run ends."""
import hashlib
import time

import pytest
import torch

from kd_methods.engine.checkpoint import load_checkpoint
from kd_methods.models import create_model

from .common import (assert_epochs_kept, check_run_folder, outcome, read_csv, run_args, run_cli, run_folders,
                     start_cli, warm_up)

BASE = """
paper: rel
table: methods
label: {method}
model: cifar_resnet8
dataset: synthetic10
batch_size: 32
train_subset: 128
test_subset: 32
seed: 2
train: {{length: 3, unit: epoch, optim: {{lr: 0.02, milestones: [2]}}}}
"""
# method -> (extra YAML, epochs written before the kill). FT: killed inside its second stage.
METHODS = {
    "dml": ("method: dml\nmethod_args: {{peers: [cifar_resnet8]}}\n", 1),
    "feed": ("method: feed\nteachers: [{t0}, {t1}]\n", 1),
    "ft": ("method: ft\nteachers: [{t0}]\n"
           "stages: {{paraphraser: {{length: 1, unit: epoch, optim: {{lr: 0.01, schedule: constant}}}}}}\n", 2),
}


def teacher_file(path, seed: int) -> str:
    """A frozen teacher as a verified weights file (no teacher run to train): its YAML entry."""
    torch.manual_seed(seed)
    torch.save(create_model("cifar_resnet8", num_classes=10).state_dict(), path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return f"{{model: cifar_resnet8, path: {path}, sha256: {sha}, num_classes: 10}}"


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(METHODS))
def test_killed_after_a_checkpoint_resumes_and_equals_an_uninterrupted_run(tmp_path, method):
    extra, kill_after = METHODS[method]
    teachers = {f"t{i}": teacher_file(tmp_path / f"t{i}.pt", i) for i in range(2)}
    config = tmp_path / "c.yaml"
    config.write_text(BASE.format(method=method) + extra.format(**teachers))
    warm_up()
    assert run_cli(run_args(config, tmp_path / "full"), tmp_path / "full.log", tmp_path) == 0
    (full,) = run_folders(tmp_path / "full")

    root, log = tmp_path / "killed", tmp_path / "killed.log"
    proc = start_cli(run_args(config, root), log, tmp_path)
    metrics = None
    while proc.is_alive() and not (metrics and len(read_csv(metrics)) >= kill_after):
        metrics = next(root.glob("runs/*/metrics.csv"), None)
        time.sleep(0.005)
    proc.kill()  # SIGKILL, in the epoch after the checkpoint of epoch `kill_after`
    proc.join()
    (run_dir,) = run_folders(root)
    assert not (run_dir / "result.json").exists(), "killed too late: the run had finished"
    found = load_checkpoint(run_dir / "last.pt")
    assert found is not None and kill_after <= len(found["history"]) < len(outcome(full)[1])

    assert run_cli(run_args(config, root), log, tmp_path) == 0, log.read_text()
    assert f"[resume] {run_dir.name}" in log.read_text()
    check_run_folder(run_dir)
    assert_epochs_kept(run_dir, found)
    assert outcome(run_dir) == outcome(full)
    a, b = (load_checkpoint(d / "model.pt")["models"] for d in (full, run_dir))
    assert a.keys() == b.keys() and all(torch.equal(a[m][k], b[m][k]) for m in a for k in a[m])
