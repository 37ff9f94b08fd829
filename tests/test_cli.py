"""kd-bench: bad input gives one line on stderr, exit code 2, and nothing written."""
import subprocess
import sys
import textwrap

import pytest

from kd_methods.cli import main

GOOD = """
model: cifar_resnet8
method: scratch
dataset: synthetic10
batch_size: 32
train_subset: 64
test_subset: 32
train: {length: 1, unit: epoch, optim: {lr: 0.05, schedule: constant}}
"""

BAD = [
    ("model: cifar_resnet8\nepochs: 3\n", "unknown key 'epochs'"),
    ("model: cifar_resnet8\nbatch_size: many\n", "expected an integer"),
    ("model: cifar_resnet9000\n", "unknown model 'cifar_resnet9000'"),
    ("model: cifar_resnet20\nmethod: kdd\n", "did you mean 'kd'"),
    ("model: cifar_resnet20\ntrain: {length: -3}\n", "length must be > 0"),
    ("model: cifar_resnet20\nmethod: kd\nmethod_args: {temperature: 0}\nteachers: [{model: cifar_resnet56}]\n",
     "temperature must be > 0"),
    ("model: cifar_resnet20\nmethod: kd\n", "needs at least 1"),
    ("model: cifar_resnet20\ntrain: {optim: {schedule: cosin}}\n", "did you mean 'cosine'"),
    ("model: [unclosed\n", "not valid YAML"),
]


@pytest.mark.parametrize("text, message", BAD)
def test_bad_configs_fail_with_one_line_and_write_nothing(workdir, capsys, text, message):
    (workdir / "bad.yaml").write_text(text)
    assert main(["run", "bad.yaml", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("kd-bench: error:")
    assert not (workdir / "runs").exists() and not (workdir / "results").exists()


def test_missing_config_file(workdir, capsys):
    assert main(["run", "nope.yaml"]) == 2
    assert "nope.yaml' not found" in capsys.readouterr().err


def test_missing_real_dataset_names_the_fix(workdir, capsys):
    (workdir / "c.yaml").write_text(GOOD.replace("synthetic10", "cifar100"))
    assert main(["run", "c.yaml", "--device", "cpu", "--data-root", str(workdir / "nodata")]) == 2
    err = capsys.readouterr().err
    assert "nodata" in err and len(err.strip().splitlines()) == 1


def test_run_trains_and_reports(workdir, capsys):
    (workdir / "c.yaml").write_text(GOOD)
    assert main(["run", "c.yaml", "--device", "cpu", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "top-1 error" in out
    assert len([d for d in (workdir / "runs").iterdir() if d.name != ".locks"]) == 1


def test_console_entry_point_runs_as_a_module(workdir):
    (workdir / "bad.yaml").write_text("model: cifar_resnet8\nepochs: 3\n")
    proc = subprocess.run([sys.executable, "-m", "kd_methods.cli", "run", "bad.yaml"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
