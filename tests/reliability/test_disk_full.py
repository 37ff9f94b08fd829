"""A full disk or a Ctrl-C in the middle of writing a checkpoint: one line, the right exit code, the
half-written file gone, the complete ones kept, and the same command finishing the run afterwards."""
import errno
import json

from kd_methods.cli import main
from kd_methods.engine import checkpoint

CONFIG = "model: cifar_resnet8\ndataset: synthetic10\nbatch_size: 32\ntrain_subset: 64\ntest_subset: 32\n" \
         "train: {length: 2, optim: {lr: 0.05}}\n"  # two epochs: the first one's checkpoint is kept


def failing_save(exception, when):
    """torch.save that fails like torch's zip writer does when the file's write fails: part of the file
    written, then a RuntimeError raised while handling the write's own exception."""
    real = checkpoint.torch.save

    def save(obj, f):
        if not when(obj):
            return real(obj, f)
        f.write(b"PK half a file")
        try:
            raise exception
        except BaseException:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 16298368")

    return save


def run_dir(workdir):
    (d,) = [d for d in (workdir / "runs").iterdir() if d.name != ".locks"]
    return d


def test_a_full_disk_while_saving_the_final_weights_is_one_line_exit_5_and_resumable(workdir, capsys, monkeypatch):
    (workdir / "c.yaml").write_text(CONFIG)
    real_save = checkpoint.torch.save
    monkeypatch.setattr(checkpoint.torch, "save", failing_save(
        OSError(errno.ENOSPC, "No space left on device"), when=lambda obj: "models" in obj))
    assert main(["run", "c.yaml", "--device", "cpu", "--no-progress"]) == 5
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no space left on the device writing" in err and "model.pt" in err
    d = run_dir(workdir)
    assert not list(d.glob(".*.tmp*")) and not (d / "model.pt").exists()  # the half-written file is gone
    assert (d / "last.pt").exists()                                      # epoch 1's checkpoint is kept
    monkeypatch.setattr(checkpoint.torch, "save", real_save)  # space freed
    assert main(["run", "c.yaml", "--device", "cpu", "--no-progress"]) == 0
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["resumed"] == 1


def test_ctrl_c_inside_torch_save_is_an_interruption_not_a_traceback(workdir, capsys, monkeypatch):
    (workdir / "c.yaml").write_text(CONFIG)
    monkeypatch.setattr(checkpoint.torch, "save", failing_save(KeyboardInterrupt(), when=lambda obj: "rng" in obj))
    assert main(["run", "c.yaml", "--device", "cpu", "--no-progress"]) == 130
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == ["kd-bench: interrupted; run the same command again to resume"]
    assert not list(run_dir(workdir).glob(".*.tmp*"))
