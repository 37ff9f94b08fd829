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
    # a teacher of 3-channel images for a student on a 1-channel dataset (each network is built for its own
    # dataset's channels, so a lone network on MNIST trains: this pair is what cannot connect)
    ("channels", "model: cifar_resnet8\nmethod: kd\ndataset: synthetic_mnist\n"
                 "teachers: [{model: cifar_resnet8, dataset: synthetic10}]\n", "to have 3 channels, but got 1 channels"),
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
    # values only the optimiser (torch) checks, found by preflight instead of after the teachers trained
    ("nesterov_without_momentum", "model: cifar_resnet8\ndataset: synthetic10\n"
                                  "train: {optim: {nesterov: true, momentum: 0}}\n",
     "train.optim: Nesterov momentum requires a momentum and zero dampening"),
    ("adam_beta", "model: cifar_resnet8\ndataset: synthetic10\ntrain: {optim: {name: adam, momentum: 1.5}}\n",
     "train.optim: Invalid beta parameter at index 0: 1.5"),
    ("infinite_length", "model: cifar_resnet8\ntrain: {length: .inf}\n", "train.length: expected a finite number"),
    ("method_arg_kind", "model: cifar_resnet8\nmethod: kd\nmethod_args: {weight: heavy}\n"
                        "teachers: [{model: cifar_resnet14}]\n", "method_args.weight: expected a number, got 'heavy'"),
    ("teachers_not_a_list", "model: cifar_resnet8\nmethod: kd\nteachers: 3\n",
     "teachers: expected a list of teacher specs, got int 3"),
    ("results_folder_label", "model: cifar_resnet8\npaper: ../elsewhere\n", "paper names the results folder"),
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


# -- what a new user tried (issue 13) ----------------------------------------------------------------------
SMOKE_SPEC = "model: cifar_resnet8\ndataset: synthetic10\n" + TINY.replace("dataset: synthetic10\n", "")


@pytest.mark.parametrize("encoding, message", [
    ("utf-16-le", "not UTF-8 text (byte 0xe9 at line 7, UTF-16 without its byte-order mark?); save the file as UTF-8"),
    ("latin-1", "not UTF-8 text (byte 0xe9 at line 7); save the file as UTF-8"),
    ("cp1252", "not UTF-8 text (byte 0xe9 at line 7)"),
])
def test_a_config_that_is_not_utf8_text_is_one_line(workdir, capsys, encoding, message):
    (workdir / "c.yaml").write_bytes((SMOKE_SPEC + "# café — notes\n").encode(encoding, errors="ignore"))
    assert main(["run", "c.yaml", "--device", "cpu"]) == 2
    assert message in one_error_line(capsys)
    assert sorted(p.name for p in workdir.iterdir()) == ["c.yaml"]


def test_random_bytes_as_a_config_are_one_line(workdir, capsys):
    (workdir / "c.yaml").write_bytes(bytes(range(256)))
    assert main(["run", "c.yaml", "--device", "cpu"]) == 2
    assert "c.yaml: not UTF-8 text (byte 0x80 at line 2, UTF-16 without" in one_error_line(capsys)


def test_a_character_yaml_refuses_is_one_line(workdir, capsys):
    (workdir / "c.yaml").write_text(SMOKE_SPEC + "label: a\x07b\n")
    assert main(["run", "c.yaml", "--device", "cpu"]) == 2
    assert "c.yaml: character #x0007 at position" in one_error_line(capsys)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "utf-8-sig"])
def test_a_config_with_a_byte_order_mark_is_read(workdir, encoding):
    """What a Windows editor saves as "Unicode": UTF-16 with a byte-order mark."""
    (workdir / "c.yaml").write_bytes((SMOKE_SPEC + "# café — notes\n").encode(encoding))
    assert load_spec(workdir / "c.yaml") == load_spec_text(workdir, SMOKE_SPEC)


def load_spec_text(workdir, text):
    (workdir / "plain.yaml").write_text(text)
    return load_spec(workdir / "plain.yaml")


@pytest.mark.parametrize("argv, message", [
    (["--device", "tpu:7"], "--device 'tpu:7' is not a device kd-bench trains on; use auto, cpu, cuda or cuda:N"),
    (["--device", "cuda:7"], "--device cuda:7: this machine has "),
    (["--seed", "-1"], "seed must be in 0..4294967295, got -1"),
    (["--seed", str(2 ** 32)], "seed must be in 0..4294967295, got 4294967296"),
    (["--data", "real"], "dataset synthetic10 is synthetic, but --data real insists on real data; pass --data auto "
                         "or synthetic, or use a real dataset (cifar10, svhn)"),
    (["--runs-dir", "c.yaml"], "--runs-dir 'c.yaml' is not a folder"),
    (["--budget", "tiny"], "kd-bench run: argument --budget: invalid choice: 'tiny'"),
])
def test_bad_run_arguments_are_one_line(workdir, capsys, argv, message):
    (workdir / "c.yaml").write_text(SMOKE_SPEC)
    assert main(["run", "c.yaml"] + argv) == 2
    assert message in one_error_line(capsys)
    assert sorted(p.name for p in workdir.iterdir()) == ["c.yaml"]


def test_unknown_tables_are_an_error_listing_the_valid_ones(workdir, capsys):
    assert main(["reproduce", "dml", "--budget", "smoke", "--tables", "table2", "table99"]) == 2
    line = one_error_line(capsys)
    assert "dml has no table 'table99' (did you mean 'table2'?); its tables are table2, table4_cifar100," in line
    assert list(workdir.iterdir()) == []


def test_a_damaged_runs_csv_is_named_kept_and_the_other_papers_still_render(workdir, capsys):
    import shutil
    from pathlib import Path
    results = Path(__file__).resolve().parents[2] / "results"
    for paper in ("dml", "tsd"):
        shutil.copytree(results / paper, workdir / "results" / paper)
    damaged = workdir / "results" / "dml" / "runs.csv"
    lines = damaged.read_text().splitlines(keepends=True)
    lines[6] = lines[6].replace(",smoke,", ",smoke,x,", 1)  # one field too many
    header = len(lines[0].rstrip("\r\n").split(","))  # the committed file's columns (no quoted commas there)
    damaged.write_text("".join(lines))
    before = {p: p.read_bytes() for p in (workdir / "results" / "dml").iterdir()}
    (workdir / "results" / "tsd" / "ensembles.png").unlink()
    (workdir / "results" / "tsd" / "generations_resnet110.md").unlink()
    assert main(["report", "dml", "tsd"]) == 2
    line = one_error_line(capsys)
    assert f"results/dml/runs.csv line 7 is damaged ({header + 1} fields where the header has {header})" in line
    assert "the other papers' reports were rendered" in line
    assert {p: p.read_bytes() for p in (workdir / "results" / "dml").iterdir()} == before
    assert (workdir / "results" / "tsd" / "ensembles.png").is_file()
    assert (workdir / "results" / "tsd" / "generations_resnet110.md").is_file()
    assert not (workdir / "results" / "README.md").exists()  # the index waits for the damaged file's fix
