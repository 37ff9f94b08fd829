"""A truncated or corrupt checkpoint through `kd-bench run`: the run resumes from the previous one (with a
one-line warning) and ends as an uninterrupted run does; when no good checkpoint is left, one error line,
exit code 2, and every file stays as it was."""
import pytest
import torch

from kd_methods.cli import main
from kd_methods.engine.checkpoint import load_checkpoint, save_atomic

from .common import outcome, run_folders

CONFIG = """
paper: rel
table: corrupt
model: cifar_resnet8
dataset: synthetic10
batch_size: 32
train_subset: 64
test_subset: 32
seed: 2
train: {length: 3, unit: epoch, optim: {lr: 0.05, milestones: [2]}}
"""


def cli(root, *extra) -> int:
    return main(["run", "c.yaml", "--device", "cpu", "--no-progress", "--runs-dir", str(root / "runs"),
                 "--results-dir", str(root / "results"), *extra])


def interrupted_after(workdir, stopped_after_epochs, epochs: int):
    """A run stopped (Ctrl-C) right after epoch `epochs`'s checkpoint and metrics were written."""
    with stopped_after_epochs(epochs):
        assert cli(workdir / "b") == 130
    (run_dir,) = run_folders(workdir / "b")
    return run_dir


def snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def damage(path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "truncated" else bytes(reversed(data)))


@pytest.fixture
def workdir(workdir):
    (workdir / "c.yaml").write_text(CONFIG)
    return workdir


@pytest.mark.slow
@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_a_damaged_checkpoint_resumes_from_the_previous_one(workdir, stopped_after_epochs, capsys, how):
    assert cli(workdir / "a") == 0
    (reference,) = run_folders(workdir / "a")
    run_dir = interrupted_after(workdir, stopped_after_epochs, epochs=2)
    assert int(load_checkpoint(run_dir / "last.pt.prev")["stage_epoch"]) == 1
    damage(run_dir / "last.pt", how)
    capsys.readouterr()

    assert cli(workdir / "b") == 0
    (warning,) = capsys.readouterr().err.strip().splitlines()
    assert warning.startswith("kd-bench: warning: checkpoint ") and "last.pt is unreadable" in warning
    assert warning.endswith("falling back to the previous one, last.pt.prev")
    assert outcome(run_dir) == outcome(reference)  # epoch 2 trained again from epoch 1's checkpoint


@pytest.mark.parametrize("keep_prev", [True, False])
def test_no_good_checkpoint_left_is_one_line_exit_2_and_nothing_changes(workdir, stopped_after_epochs, capsys,
                                                                       keep_prev):
    run_dir = interrupted_after(workdir, stopped_after_epochs, epochs=2)
    damage(run_dir / "last.pt", "truncated")
    if keep_prev:
        damage(run_dir / "last.pt.prev", "garbage")
    else:
        (run_dir / "last.pt.prev").unlink()
    before = snapshot(run_dir)
    capsys.readouterr()

    assert cli(workdir / "b") == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = err.strip().splitlines()
    if keep_prev:
        assert "last.pt and last.pt.prev are both unreadable; delete both to restart the run" in line
    else:
        assert "last.pt is unreadable" in line and "delete it to restart the run" in line
    assert line.startswith("kd-bench: error: checkpoint")
    assert snapshot(run_dir) == before  # the manifest `start` rewrote is put back
    assert not (workdir / "b" / "results").exists()


def test_a_damaged_newest_checkpoint_never_displaces_a_good_previous_one(tmp_path):
    # After a fall-back the next save must not rotate the damaged file into `.prev`: a kill between the
    # save's two renames would then leave no good checkpoint.
    path = tmp_path / "last.pt"
    save_atomic({"step": torch.tensor(1)}, path)
    save_atomic({"step": torch.tensor(2)}, path)
    path.write_bytes(path.read_bytes()[:50])
    save_atomic({"step": torch.tensor(3)}, path)
    assert int(torch.load(tmp_path / "last.pt.prev", weights_only=True)["step"]) == 1
    assert int(load_checkpoint(path)["step"]) == 3
