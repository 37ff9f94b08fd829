"""Bad input through `kd-bench run`: one line on stderr naming the problem and the fix, exit code 2, no
traceback, and nothing written (no runs/, no results/). Extends tests/test_cli.py with what only shows
when a method meets its models and data (caught by preflight) and with missing data."""
import subprocess
import sys

import pytest

from kd_methods.cli import main
from kd_methods.errors import DataMissing
from kd_methods.runs.runner import RunContext, execute
from kd_methods.runs.spec import ExperimentSpec, load_spec, resolve
from kd_methods.runs.store import RunStore

TINY = "dataset: synthetic10\nbatch_size: 16\ntrain_subset: 32\ntest_subset: 16\ntrain: {length: 1}\n"

BAD = [
    # a teacher/student pair whose feature shapes FSP cannot connect (16 vs 32 channels at stage 1)
    ("fsp_pair", "model: cifar_resnet20\nmethod: fsp\nteachers: [{model: cifar_wrn_16_2}]\n" + TINY,
     "the student's stage1 has 16 channels but the teacher's has 32"),
    # a teacher trained for another label set: its logits cannot meet the student's
    ("label_sets", "model: cifar_resnet8\nmethod: kd\ndataset: synthetic100\n"
                   "teachers: [{model: cifar_resnet8, dataset: synthetic10}]\n",
     "student and teacher shapes differ: (2, 100) vs (2, 10)"),
    ("negative_subset", "model: cifar_resnet8\ndataset: synthetic10\ntrain_subset: -5\n",
     "train_subset must be >= 1 (or omitted), got -5"),
    ("subset_below_batch", "model: cifar_resnet8\ndataset: synthetic10\ntrain_subset: 64\nbatch_size: 128\n",
     "fewer than one batch of 128; lower batch_size or raise train_subset"),
    ("unknown_dataset", "model: cifar_resnet8\ndataset: cifar1000\n",
     "unknown dataset 'cifar1000' (did you mean 'cifar100'?)"),
    ("unknown_augment", "model: cifar_resnet8\ndataset: synthetic10\naugment: crop_flp\n",
     "'crop_flp' does not apply to synthetic10 (did you mean 'crop_flip'?)"),
    ("augment_for_folders", "model: cifar_resnet8\ndataset: synthetic10\naugment: imagenet\n",
     "use one of none, crop_flip, crop_flip_reflect"),
    ("missing_teachers", "model: cifar_resnet8\nmethod: fitnets\n", "needs at least 1 and at most 1 teachers, got 0"),
    ("unknown_method", "model: cifar_resnet8\nmethod: fitnet\n", "unknown method 'fitnet' (did you mean 'fitnets'?)"),
    ("unknown_model", "model: cifar_resnet_20\n", "unknown model 'cifar_resnet_20' (did you mean 'cifar_resnet20'?)"),
    ("unknown_teacher_model", "model: cifar_resnet8\nmethod: kd\nteachers: [{model: cifar_resnet57}]\n",
     "teachers[0].model: unknown model 'cifar_resnet57' (did you mean 'cifar_resnet56'?)"),
    ("negative_epochs", "model: cifar_resnet8\ntrain: {length: -200}\n", "train.length must be > 0, got -200"),
    ("negative_stage_epochs", "model: cifar_resnet8\nmethod: fitnets\nteachers: [{model: cifar_resnet14}]\n"
                              "stages: {hint: {length: -1}}\n", "stages.hint.length must be > 0"),
    ("zero_temperature", "model: cifar_resnet8\nmethod: kd\nmethod_args: {temperature: -4}\n"
                         "teachers: [{model: cifar_resnet14}]\n", "temperature must be > 0, got -4"),
    ("negative_gamma", "model: cifar_resnet8\ntrain: {optim: {gamma: -0.1}}\n", "gamma must be > 0"),
    ("unknown_optim_key", "model: cifar_resnet8\ntrain: {optim: {learning_rate: 0.1}}\n",
     "unknown key 'learning_rate'"),
    ("wrong_type_bool", "model: cifar_resnet8\ntrain: {optim: {nesterov: maybe}}\n", "expected true or false"),
    ("wrong_type_int", "model: cifar_resnet8\nseed: 1.5\n", "seed: expected an integer, got 1.5"),
    ("wrong_type_list", "model: cifar_resnet8\nteachers: {model: cifar_resnet14}\n", "teachers"),
    ("unknown_hyperparameter", "model: cifar_resnet8\nmethod: kd\nmethod_args: {temprature: 4}\n"
                               "teachers: [{model: cifar_resnet14}]\n", "did you mean 'temperature'"),
    ("unknown_stage", "model: cifar_resnet8\nmethod: fitnets\nteachers: [{model: cifar_resnet14}]\n"
                      "stages: {hints: {length: 1}}\n", "has no stage 'hints' (did you mean 'hint'?)"),
    ("bad_sha256", "model: cifar_resnet8\nmethod: kd\n"
                   "teachers: [{model: cifar_resnet8, path: w.pt, sha256: not-a-hash, num_classes: 10}]\n",
     "sha256 must be the file's sha256 in hex"),
    ("unknown_budget_key", "model: cifar_resnet8\nbudget: smoke\n", "unknown key 'budget'"),
]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kd-bench: error: "), err
    return lines[0]


@pytest.mark.parametrize("text, message", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_config_is_one_line_exit_2_and_writes_nothing(workdir, capsys, text, message):
    (workdir / "bad.yaml").write_text(text)
    assert main(["run", "bad.yaml", "--device", "cpu"]) == 2
    assert message in one_error_line(capsys)
    assert sorted(p.name for p in workdir.iterdir()) == ["bad.yaml"]


def test_missing_dataset_says_where_it_looked_and_how_to_fix_it(workdir, capsys):
    (workdir / "c.yaml").write_text("model: cifar_resnet8\ndataset: cifar10\n")
    assert main(["run", "c.yaml", "--device", "cpu", "--data-root", "nodata"]) == 2
    line = one_error_line(capsys)
    assert "nodata/cifar10" in line and "kd-bench download cifar10" in line and "--data synthetic" in line
    assert sorted(p.name for p in workdir.iterdir()) == ["c.yaml"]


def test_missing_teacher_dataset_is_found_before_anything_trains(workdir, capsys):
    (workdir / "c.yaml").write_text("model: cifar_resnet8\nmethod: kd\n" + TINY +
                                    "teachers: [{model: cifar_resnet14, dataset: cifar10}]\n")
    assert main(["run", "c.yaml", "--device", "cpu", "--data-root", "nodata"]) == 2
    assert "CIFAR-10 not found under nodata/cifar10" in one_error_line(capsys)
    assert sorted(p.name for p in workdir.iterdir()) == ["c.yaml"]


def test_yaml_exponents_without_a_dot_are_numbers(workdir):
    # PyYAML alone reads `1e-3` as the string '1e-3', which the type check would then reject.
    (workdir / "c.yaml").write_text("model: cifar_resnet8\ntrain: {optim: {lr: 1e-3, weight_decay: 5e-4}}\n")
    optim = load_spec(workdir / "c.yaml").train.optim
    assert (optim.lr, optim.weight_decay) == (1e-3, 5e-4)


def test_data_missing_at_training_time_leaves_no_run_folder(tmp_path):
    # Past preflight (a library caller), the engine's DataMissing still writes nothing: the run folder that
    # `start` created is removed again.
    cfg = resolve(ExperimentSpec(model="cifar_resnet8", dataset="cifar10"), data_root=str(tmp_path / "nodata"))
    ctx = RunContext(store=RunStore(tmp_path / "runs"), results_dir=tmp_path / "results", log=lambda m: None)
    with pytest.raises(DataMissing, match="CIFAR-10 not found"):
        execute(cfg, ctx)
    assert not (tmp_path / "runs" / cfg["run_id"]).exists() and not (tmp_path / "results").exists()


@pytest.mark.slow
def test_the_console_command_prints_no_traceback_for_a_pair_preflight_rejects(workdir):
    (workdir / "bad.yaml").write_text(BAD[0][1])
    proc = subprocess.run([sys.executable, "-m", "kd_methods.cli", "run", "bad.yaml", "--device", "cpu"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("kd-bench: error: fsp: ") and BAD[0][2] in line
    assert sorted(p.name for p in workdir.iterdir()) == ["bad.yaml"]
