"""Bad input, found systematically: property-based fuzzing (Hypothesis) of the spec loader and the CLI.

The property, for every input: `kd-bench` either runs (reaches its work with a config it accepted) or exits
2 with one stderr line naming the problem, with no traceback, and leaves the runs and results folders
byte for byte as they were. The examples are derandomized (the same ones on every run) and bounded.

Training is not what is fuzzed: in most tests the work itself (`execute`, the bench, downloads, the
report's rendering) is replaced by a recorder, so an accepted input costs milliseconds; preflight (which
builds every model pair and runs a forward pass) stays real for specs, restricted to small models.
`test_accepted_specs_train_at_the_smoke_budget` trains a handful of accepted inputs for real.
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import string
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from kd_methods.cli import main

ROOT = Path(__file__).resolve().parents[2]
FUZZ = dict(derandomize=True, database=None, deadline=None, print_blob=False,
            phases=[Phase.explicit, Phase.generate, Phase.shrink],
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                   HealthCheck.data_too_large])


def fuzz(examples: int) -> settings:
    """Derandomized (the same examples every run), bounded, no example database, no deadline.
    KD_FUZZ_SCALE=N runs N times as many examples (a longer hunt than `make test`'s)."""
    return settings(max_examples=examples * int(os.environ.get("KD_FUZZ_SCALE", "1")), **FUZZ)

TINY = {"model": "cifar_resnet8", "method": "scratch", "dataset": "synthetic10", "batch_size": 4,
        "train_subset": 8, "test_subset": 8, "train": {"length": 1, "unit": "epoch",
                                                        "optim": {"lr": 0.05, "schedule": "constant"}}}
SMALL_MODELS = ["cifar_resnet8", "cifar_resnet14", "cifar_resnet20", "cifar_wrn_16_2"]
METHODS = ["scratch", "kd", "at", "l1", "feed", "ft", "fitnets", "fsp", "dml", "ban", "tolerant",
           "tolerant_student", "ensemble", "finetune"]
DATASETS = ["synthetic10", "synthetic100", "synthetic_mnist", "cifar10", "cifar100", "imagenet", "mnist"]


# -- the world a command runs in ---------------------------------------------------------------------
def tree(root: Path) -> dict[str, bytes]:
    """Every file under root (relative path -> bytes), and every folder (-> None)."""
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in root.rglob("*")}


@contextlib.contextmanager
def world():
    """A fresh folder as the current directory, holding a finished-looking runs/ and a copy of the
    committed results of one paper (so 'left as it was' has something to lose)."""
    before = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "runs" / "0123456789ab").mkdir(parents=True)
        (root / "runs" / "0123456789ab" / "result.json").write_text('{"top1_err": 50.0}')
        shutil.copytree(ROOT / "results" / "tsd", root / "results" / "tsd")
        (root / "good.yaml").write_text(yaml.safe_dump(TINY))
        (root / "file.txt").write_text("not a folder")
        os.chdir(root)
        try:
            yield root
        finally:
            os.chdir(before)


def cli(argv: list[str]) -> tuple[int, str]:
    """(exit code, stderr) of `kd-bench ARGV` in this process."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue()


def check(root: Path, code: int, err: str, reached: list, before: dict) -> None:
    """The property: ran (its work was reached, exit 0), or exit 2 with one line and nothing changed."""
    assert "Traceback" not in err
    if code == 0:
        return
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kd-bench: error: ") and len(lines[0]) > 25, err
    assert not reached, "the work started, then the command failed"
    assert {k: v for k, v in tree(root).items() if k.split("/")[0] in ("runs", "results")} == before


def snapshot(root: Path) -> dict:
    return {k: v for k, v in tree(root).items() if k.split("/")[0] in ("runs", "results")}


@pytest.fixture
def reached(monkeypatch):
    """Replace the work of every command by a recorder (the list of what was reached)."""
    import kd_methods.bench
    import kd_methods.data
    import kd_methods.report
    import kd_methods.runs.executors
    import kd_methods.runs.runner

    calls = []

    def fake_execute(cfg, ctx=None):
        calls.append(("execute", cfg["run_id"]))
        return dict(top1_err=50.0, best_top1_err=50.0, top5_err=10.0, epochs=1)

    monkeypatch.setattr(kd_methods.runs.runner, "execute", fake_execute)
    monkeypatch.setattr(kd_methods.runs.executors, "execute", fake_execute)  # the sequential executor's
    monkeypatch.setattr(kd_methods.report, "render_paper", lambda *a, **k: calls.append(("render",)))
    monkeypatch.setattr(kd_methods.report, "render_all", lambda *a, **k: calls.append(("render",)))
    monkeypatch.setattr(kd_methods.bench, "main", lambda **k: calls.append(("bench",)) or 0)
    monkeypatch.setattr(kd_methods.data, "download", lambda *a: calls.append(("download",)))
    return calls


# -- random YAML documents -----------------------------------------------------------------------------
names = st.text(alphabet=string.ascii_letters + string.digits + "_-.:/ \n\t'\"é—", max_size=12)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70),
                    st.sampled_from([0, -1, 1, 2 ** 31, 2 ** 32, 2 ** 63, 10 ** 30]),
                    st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0.0, -0.0, 1e-300, -1e-3, 1e300]), names,
                    st.sampled_from(SMALL_MODELS + METHODS + DATASETS + ["epoch", "iter", "cosine", "sgd", "zca"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(names, inner, max_size=3)), max_leaves=6)
numbers = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0, -1, 1e-9, 0.5, 3, 1e9, 2 ** 64])
counts = st.integers(-3, 40) | st.sampled_from([2 ** 31, 2 ** 32, 2 ** 63, 10 ** 30, 1.0, 2.5])
flags = st.booleans() | st.sampled_from(["yes", 1, None])
PLAUSIBLE = {  # field -> values of the right kind, near and past its limits
    "model": st.sampled_from(SMALL_MODELS + ["cifar_resnet9", "resnet34", "fitnet_mnist"]),
    "method": st.sampled_from(METHODS + ["kdd"]),
    "dataset": st.sampled_from(DATASETS + ["synthetic_imagenet", "cub200"]),
    "augment": st.sampled_from(["none", "crop_flip", "crop_flip_reflect", "imagenet", "reid", None]),
    "preprocess": st.sampled_from(["standard", "zca", "ZCA"]),
    "lr_scaling": st.sampled_from(["none", "linear", "sqrt"]),
    "unit": st.sampled_from(["epoch", "iter", "step"]), "schedule": st.sampled_from(["constant", "step",
                                                                                     "multistep", "cosine"]),
    "name": st.sampled_from(["sgd", "rmsprop", "adam", "adamw"]), "nesterov": flags,
    "milestones": st.lists(numbers, max_size=3), "peers": st.lists(st.sampled_from(SMALL_MODELS + ["x"]), max_size=2),
    "input_size": st.lists(counts, max_size=4) | st.none(), "eta": st.dictionaries(
        st.sampled_from(["tsd", "ls", "cp", "x"]), numbers, max_size=2),
    "hint_point": st.sampled_from(["middle", "stage1", "nowhere"]), "term": st.sampled_from(["tsd", "ls", "cp", "no"]),
    "sha256": st.sampled_from(["b627a593", "xyz", "0" * 64, ""]), "path": st.sampled_from(["w.pt", "", "/"]),
    "paper": st.sampled_from(["fuzz", "../up", "a/b", "", "ok-1.x"]),
}
for key in ("batch_size", "seed", "train_subset", "test_subset", "k", "p", "num_classes", "step_size"):
    PLAUSIBLE[key] = counts
for key in ("length", "lr", "momentum", "weight_decay", "gamma", "alpha", "eps", "temperature", "weight", "beta"):
    PLAUSIBLE[key] = numbers
PATHS = ["model", "method", "method_args", "teachers", "dataset", "augment", "preprocess", "batch_size", "train",
         "stages", "seed", "train_subset", "test_subset", "lr_scaling", "init", "paper", "table", "label",
         "train.length", "train.unit", "train.optim", "train.optim.name", "train.optim.lr", "train.optim.momentum",
         "train.optim.nesterov", "train.optim.weight_decay", "train.optim.schedule", "train.optim.milestones",
         "train.optim.step_size", "train.optim.gamma", "train.optim.alpha", "train.optim.eps",
         "method_args.temperature", "method_args.weight", "method_args.beta", "method_args.p", "method_args.peers",
         "method_args.eta", "method_args.k", "method_args.input_size", "method_args.hint_point", "method_args.term",
         "stages.train.length", "stages.paraphraser.unit", "stages.hint.optim.lr", "teachers.0.model",
         "teachers.0.dataset", "teachers.0.path", "teachers.0.sha256", "teachers.0.method", "init.path",
         "init.sha256", "init.model", "init.num_classes"]


def set_path(doc, path: str, value):
    keys = path.split(".")
    node = doc
    for k in keys[:-1]:
        if isinstance(node, list):
            if not node:
                node.append({})
            node = node[0] if isinstance(node[0], dict) else node
            continue
        nxt = node.get(k)
        if not isinstance(nxt, (dict, list)):
            nxt = [] if k == "teachers" else {}
            node[k] = nxt
        node = nxt
    if isinstance(node, dict):
        node[keys[-1]] = value
    elif isinstance(node, list):
        node.append(value)
    return doc


@st.composite
def spec_documents(draw):
    """A tiny valid spec with one to three fields replaced, a teacher added or a key dropped."""
    doc = yaml.safe_load(yaml.safe_dump(TINY))
    if draw(st.booleans()):
        doc["method"] = draw(st.sampled_from(METHODS))
        doc["teachers"] = [{"model": draw(st.sampled_from(SMALL_MODELS)), "dataset": doc["dataset"]}
                           for _ in range(draw(st.integers(0, 2)))]
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS)) if draw(st.integers(0, 9)) else draw(names)
        field = path.split(".")[-1]
        value = draw(PLAUSIBLE[field]) if field in PLAUSIBLE and draw(st.integers(0, 3)) else draw(values)
        set_path(doc, path, value)
    if not draw(st.integers(0, 7)):
        doc.pop(draw(st.sampled_from(sorted(doc))), None)
    return doc


def encoded(text: str, how: str) -> bytes:
    if how == "latin-1":
        return text.encode("latin-1", errors="replace")
    return text.encode(how)


documents = st.one_of(
    spec_documents().map(lambda d: yaml.safe_dump(d, allow_unicode=True).encode()),
    spec_documents().map(lambda d: yaml.safe_dump(d, allow_unicode=True).encode()),
    st.tuples(spec_documents(), st.sampled_from(["utf-8", "utf-16", "utf-16-le", "utf-32", "latin-1"])).map(
        lambda d: encoded(yaml.safe_dump(d[0], allow_unicode=True), d[1])),
    values.map(lambda v: yaml.safe_dump(v, allow_unicode=True).encode()),   # any YAML document at all
    st.text(max_size=80).map(str.encode),                                   # any text
    st.binary(max_size=80),                                                 # any bytes
    st.tuples(spec_documents(), st.integers(0, 10), st.text(max_size=20)).map(  # a line overwritten
        lambda d: "\n".join(line if i != d[1] else d[2] for i, line in
                            enumerate(yaml.safe_dump(d[0]).splitlines())).encode("utf-8", "surrogatepass")),
)


@fuzz(150)
@given(doc=documents, budget=st.sampled_from(["smoke", "short", "paper"]),
       data=st.sampled_from(["auto", "synthetic", "real"]))
def test_random_spec_files_run_or_fail_with_one_line(reached, doc, budget, data):
    with world() as root:
        (root / "spec.yaml").write_bytes(doc)
        before = snapshot(root)
        reached.clear()
        code, err = cli(["run", "spec.yaml", "--device", "cpu", "--budget", budget, "--data", data,
                         "--data-root", "nodata"])
        check(root, code, err, reached, before)
        event(f"exit {code}: {err.partition('error: ')[2].replace('spec.yaml', '')[:45] if code else 'ran'}")
        if code == 0:
            assert reached and reached[-1][0] == "execute"


# -- random argument lists -----------------------------------------------------------------------------
VALUES = {
    "--budget": st.sampled_from(["smoke", "short", "paper", "tiny"]),
    "--data": st.sampled_from(["auto", "synthetic", "real", "fake"]),
    "--data-root": st.sampled_from(["data", "nodata", "file.txt"]),
    "--runs-dir": st.sampled_from(["runs", "file.txt", "file.txt/sub", "new/runs", ""]),
    "--results-dir": st.sampled_from(["results", "file.txt", "other", "results/tsd/runs.csv"]),
    "--device": st.sampled_from(["auto", "cpu", "cuda", "cuda:1", "tpu:7", "cpu:1", "meta", "", "CPU", "cuda:-1"]),
    "--seed": st.sampled_from(["0", "7", "-1", "4294967296", "1.5", "x", "99999999999999999999"]),
    "--seeds": st.sampled_from(["1", "0", "-3", "2", "many"]),
    "--tables": st.lists(st.sampled_from(["table1", "table2", "table99", "fig4", "entropy", "Table1",
                                          "generations_resnet110"]), max_size=2),
    "--out": st.sampled_from(["results/bench", "file.txt", "new"]),
}
COMMON = ["--budget", "--data", "--data-root", "--runs-dir", "--results-dir", "--device", "--compile", "--no-amp",
          "--deterministic", "--progress", "--no-progress"]
COMMANDS = {  # command -> (its positional arguments, its options)
    "run": (st.sampled_from(["good.yaml", "cifar.yaml", "missing.yaml", "file.txt", "runs"]).map(lambda a: [a]),
            COMMON + ["--seed"]),
    "reproduce": (st.sampled_from(["feed", "dml", "fitnets", "fsp", "tsd", "feeed"]).map(lambda a: [a]),
                  COMMON + ["--tables", "--seeds"]),
    "report": (st.lists(st.sampled_from(["tsd", "fitnets", "dml", "nope"]), max_size=2), ["--results-dir"]),
    "bench": (st.just([]), ["--device", "--out", "--quick", "--compile", "--no-compile"]),
    "download": (st.sampled_from(["cifar10", "mnist", "imagenet", "x"]).map(lambda a: [a]), ["--data-root"]),
}
junk = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=10)


@st.composite
def argument_lists(draw):
    """A command (now and then any word) with its positional arguments and options in any order, values
    valid or not, now and then a stray word or an option of another command."""
    command = draw(st.sampled_from(sorted(COMMANDS))) if draw(st.integers(0, 9)) else draw(junk)
    positional, options = COMMANDS.get(command, (st.just([]), COMMON))
    parts = [draw(positional)]
    for _ in range(draw(st.integers(0, 4))):
        roll = draw(st.integers(0, 9))
        option = draw(st.sampled_from(options if roll < 8 else sorted(VALUES)))
        value = draw(VALUES[option]) if option in VALUES else []
        parts.append([option, *(value if isinstance(value, list) else [value])])
        if roll == 9:
            parts.append([draw(junk)])
    order = draw(st.permutations(range(len(parts))))
    return [command] + [a for i in order for a in parts[i]]


@fuzz(200)
@given(argv=argument_lists())
def test_random_argument_lists_run_or_fail_with_one_line(reached, monkeypatch, argv):
    import kd_methods.runs.reproduce
    if argv[0] == "reproduce":  # a whole paper's models: real preflight would take seconds per example
        monkeypatch.setattr(kd_methods.runs.reproduce, "preflight", lambda cfgs: len(list(cfgs)))
    with world() as root:
        (root / "cifar.yaml").write_text(yaml.safe_dump(dict(TINY, dataset="cifar10")))
        before = snapshot(root)
        reached.clear()
        code, err = cli(argv)
        check(root, code, err, reached, before)
        event(f"exit {code}: {err.partition('error: ')[2][:40] if code else 'ran'}")


# -- damaged results --------------------------------------------------------------------------------------
@fuzz(30)
@given(line=st.integers(0, 45), how=st.sampled_from(["cut", "bytes", "field", "number", "extra", "quote", "nul"]),
       junk=st.binary(min_size=1, max_size=6))
def test_a_damaged_runs_csv_is_named_with_its_line_and_left_as_it_was(monkeypatch, line, how, junk):
    """`kd-bench report` (for real, but PNGs not rasterised) over a runs.csv damaged in one line: the
    report renders (the damage did not matter) or the command names the file and the line, and changes
    nothing."""
    import benchmarks.plots
    monkeypatch.setattr(benchmarks.plots, "save", lambda fig, path: Path(path).write_bytes(b"png"))
    with world() as root:
        path = root / "results" / "tsd" / "runs.csv"
        lines = path.read_bytes().split(b"\n")
        i = min(line, len(lines) - 2)
        damage = {"cut": lambda s: s[: len(s) // 2], "bytes": lambda s: s[:5] + junk + s[5:],
                  "field": lambda s: s + b",x", "number": lambda s: s.replace(b",smoke,1,", b",smoke,one,"),
                  "extra": lambda s: s.replace(b'"{', b'"[', 1), "quote": lambda s: b'"' + s,
                  "nul": lambda s: s + b"\0"}[how]
        lines[i] = damage(lines[i])
        path.write_bytes(b"\n".join(lines))
        before = snapshot(root)
        from kd_methods.runs.store import read_results
        try:
            read_results(path)
            readable = True
        except Exception:
            readable = False
        code, err = cli(["report", "tsd"])
        check(root, code, err, [], before)
        event(f"exit {code}")
        if code == 2:
            assert "results/tsd/runs.csv line " in err and not readable
        else:
            assert readable


# -- a few accepted inputs, trained for real ------------------------------------------------------------------
@fuzz(3)
@given(seed=st.integers(0, 2 ** 32 - 1), options=st.lists(st.sampled_from(["--no-amp", "--deterministic"]),
                                                          unique=True),
       data=st.sampled_from(["auto", "synthetic"]), encoding=st.sampled_from(["utf-8", "utf-16"]))
def test_accepted_specs_train_at_the_smoke_budget(seed, options, data, encoding):
    with world() as root:
        (root / "spec.yaml").write_bytes(yaml.safe_dump(dict(TINY, paper="fuzz")).encode(encoding))
        code, err = cli(["run", "spec.yaml", "--budget", "smoke", "--device", "cpu", "--no-progress",
                         "--seed", str(seed), "--data", data, *options])
        assert code == 0, err
        from kd_methods.runs.store import read_results
        (row,) = read_results(root / "results" / "fuzz" / "runs.csv")
        assert row["seed"] == str(seed) and row["status"] == "finished"
        assert (root / "results" / "fuzz" / "curves.csv").is_file()
