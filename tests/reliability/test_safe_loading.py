"""Safe loading: every torch.load in the project reads tensors and plain data only (weights_only=True),
pickle is used for nothing but the CIFAR batch files the user downloads, and a pretrained file is used
only when its sha256 matches the one recorded for it (through `kd-bench run`: exit code 2, one line,
nothing written)."""
import ast
import pickle
from pathlib import Path

import pytest
import timm
import torch

import kd_methods.models  # noqa: F401  (registers the CIFAR models)
from kd_methods.cli import main
from kd_methods.engine.checkpoint import sha256_of

ROOT = Path(__file__).resolve().parents[2]
# torchvision's CIFAR batches are Python pickles by format: data the user downloaded (md5-checked by
# torchvision) and placed under --data-root, read in this one module by an unpickler that admits numpy
# arrays and plain data only (tests/test_data_files.py).
PICKLE_ALLOWED = {"kd_methods/data/files.py"}


def sources():
    for folder in ("kd_methods", "benchmarks", "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), ast.parse(path.read_text(), filename=str(path))


def dotted(node) -> str:
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def test_every_torch_load_is_weights_only_and_pickle_reads_only_dataset_files():
    problems = []
    for rel, tree in sources():
        calls = {id(n.func): n for n in ast.walk(tree) if isinstance(n, ast.Call)}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in ("torch", "pickle", "dill", "joblib"):
                if any(a.name in ("load", "loads", "Unpickler") for a in node.names):
                    problems.append(f"{rel}:{node.lineno}: from {node.module} import load")
            name = dotted(node) if isinstance(node, ast.Attribute) else ""
            if name == "torch.load":
                call = calls.get(id(node))
                safe = call is not None and any(k.arg == "weights_only" and isinstance(k.value, ast.Constant)
                                                and k.value.value is True for k in call.keywords)
                if not safe:
                    problems.append(f"{rel}:{node.lineno}: torch.load without weights_only=True")
            if name in ("pickle.load", "pickle.loads", "pickle.Unpickler") and rel not in PICKLE_ALLOWED:
                problems.append(f"{rel}:{node.lineno}: {name}")
    assert problems == []


@pytest.fixture
def weights(workdir):
    """A cifar_resnet8 state dict (10 classes) saved as a user's pretrained file, and its sha256."""
    path = workdir / "teacher.pt"
    torch.save(timm.create_model("cifar_resnet8", num_classes=10).state_dict(), path)
    return path, sha256_of(path)


def kd_config(workdir, path: str, sha256: str, model: str = "cifar_resnet8") -> None:
    (workdir / "c.yaml").write_text(
        "paper: rel\ntable: safe\nmodel: cifar_resnet8\nmethod: kd\ndataset: synthetic10\nbatch_size: 16\n"
        "train_subset: 32\ntest_subset: 16\ntrain: {length: 1}\n"
        f"teachers: [{{model: {model}, path: {path}, sha256: '{sha256}', num_classes: 10}}]\n")


def refused(workdir, capsys) -> str:
    before = sorted(p.name for p in workdir.iterdir())
    assert main(["run", "c.yaml", "--device", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert sorted(p.name for p in workdir.iterdir()) == before  # no runs/, no results/
    return line


def test_a_pretrained_file_with_another_sha256_is_refused(workdir, capsys, weights):
    path, digest = weights
    kd_config(workdir, path.name, ("0" if digest[0] != "0" else "1") + digest[1:])
    line = refused(workdir, capsys)
    assert f"pretrained weights {path.name} have sha256 {digest[:12]}..." in line and "re-download" in line


def test_a_missing_pretrained_file_is_refused(workdir, capsys, weights):
    kd_config(workdir, "elsewhere.pt", weights[1])
    assert "pretrained weights elsewhere.pt not found" in refused(workdir, capsys)


def test_a_verified_file_for_another_architecture_is_refused(workdir, capsys, weights):
    path, digest = weights
    kd_config(workdir, path.name, digest, model="cifar_resnet14")
    line = refused(workdir, capsys)
    assert "do not fit cifar_resnet14 with 10 classes (Missing key(s)" in line


class RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_file_that_would_run_code_is_refused_even_with_its_own_sha256(workdir, capsys):
    # The checksum says the file is the recorded one, not that it is harmless: weights_only still applies.
    marker = workdir / "code-ran"
    path = workdir / "evil.pt"
    torch.save({"conv1.weight": torch.zeros(1), "payload": RunsCode(marker)}, path, pickle_module=pickle)
    kd_config(workdir, path.name, sha256_of(path))
    line = refused(workdir, capsys)
    assert "evil.pt is unreadable" in line and "re-download the file" in line
    assert not marker.exists()


@pytest.mark.slow
def test_a_verified_pretrained_teacher_is_used(workdir, capsys, weights):
    path, digest = weights
    kd_config(workdir, path.name, digest[:8])  # a torchvision-style 8-digit prefix is enough
    assert main(["run", "c.yaml", "--device", "cpu", "--no-progress"]) == 0
    assert "top-1 error" in capsys.readouterr().out
