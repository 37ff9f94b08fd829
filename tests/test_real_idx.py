"""MNIST / Fashion-MNIST: offline import of the IDX files (`kd-bench download NAME --from DIR`) and the readers.

Most tests write tiny IDX files and record their sha256 in place of the published ones. The tests at the end
read the real files when KD_REAL_DATA names a folder holding `mnist/` and `fashion-mnist/` (CI points it at
../shared/data); elsewhere they skip.
"""
import gzip
import hashlib
import os
import re
from pathlib import Path

import numpy as np
import pytest

from kd_methods.cli import main
from kd_methods.data import DataConfig, build_data
from kd_methods.data import files
from kd_methods.errors import DataMissing

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def idx_bytes(array: np.ndarray) -> bytes:
    return bytes([0, 0, 8, array.ndim]) + np.array(array.shape, ">i4").tobytes() + array.astype(np.uint8).tobytes()


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A source folder of four tiny IDX files (images gzipped, labels raw, as a mixed copy would be), their
    sha256 recorded as fashion_mnist's; returns (source, {file: decompressed bytes})."""
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (6, 28, 28)),
              "train-labels-idx1-ubyte": np.array([0, 1, 2, 3, 4, 9]),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (3, 28, 28)),
              "t10k-labels-idx1-ubyte": np.array([9, 2, 1])}
    source = tmp_path / "source"
    source.mkdir()
    blobs = {name: idx_bytes(a) for name, a in arrays.items()}
    for name, blob in blobs.items():
        if "images" in name:
            (source / f"{name}.gz").write_bytes(gzip.compress(blob))
        else:
            (source / name).write_bytes(blob)
    monkeypatch.setitem(files.IDX_SHA256, "fashion_mnist",
                        {name: hashlib.sha256(blob).hexdigest() for name, blob in blobs.items()})
    return source, blobs


def test_import_installs_decompressed_files_the_reader_serves(tiny, tmp_path, capsys):
    source, blobs = tiny
    root = tmp_path / "data"
    assert main(["download", "fashion_mnist", "--from", str(source), "--data-root", str(root)]) == 0
    raw = root / "fashion_mnist" / "FashionMNIST" / "raw"     # torchvision's FashionMNIST layout
    assert sorted(p.name for p in raw.iterdir()) == sorted(FILES)
    assert all((raw / name).read_bytes() == blob for name, blob in blobs.items())
    assert str(raw) in capsys.readouterr().out
    data = build_data(DataConfig("fashion_mnist", root=str(root), batch_size=2))
    assert (data.num_classes, data.input_size, data.n_train, data.n_test) == (10, (1, 28, 28), 6, 3)
    assert data.mean == (0.2860,) and data.std == (0.3530,)
    x, y = next(iter(data.test))
    test_images = np.frombuffer(blobs["t10k-images-idx3-ubyte"], np.uint8, offset=16).reshape(3, 28, 28)
    assert y.tolist() == [9, 2, 1]
    np.testing.assert_allclose(x[:, 0].numpy(), (test_images / 255 - 0.2860) / 0.3530, atol=1e-5)


@pytest.mark.parametrize("damage", ["flip a byte", "missing file"])
def test_a_bad_source_exits_2_with_one_line_and_changes_nothing(tiny, tmp_path, capsys, damage):
    source, blobs = tiny
    root = tmp_path / "data"
    raw = root / "fashion_mnist" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte").write_bytes(b"an earlier copy")
    if damage == "flip a byte":
        broken = bytearray(blobs["t10k-labels-idx1-ubyte"])
        broken[-1] ^= 1
        (source / "t10k-labels-idx1-ubyte").write_bytes(bytes(broken))
        expected = r"t10k-labels-idx1-ubyte is not the published t10k-labels-idx1-ubyte \(sha256 [0-9a-f]{12}"
    else:
        (source / "t10k-labels-idx1-ubyte").unlink()
        expected = "has neither t10k-labels-idx1-ubyte nor t10k-labels-idx1-ubyte.gz"
    assert main(["download", "fashion_mnist", "--from", str(source), "--data-root", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("kd-bench: error: Fashion-MNIST: ")
    assert re.search(expected, err), err
    # nothing half-copied: the earlier file is as it was and no other file (nor a temporary) appeared
    assert [p.name for p in raw.iterdir()] == ["train-images-idx3-ubyte"]
    assert (raw / "train-images-idx3-ubyte").read_bytes() == b"an earlier copy"


def test_from_refuses_datasets_it_cannot_verify(tmp_path, capsys):
    assert main(["download", "cifar10", "--from", str(tmp_path), "--data-root", str(tmp_path / "d")]) == 2
    assert "--from installs mnist or fashion_mnist" in capsys.readouterr().err
    assert main(["download", "mnist", "--from", str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_reader_takes_torchvision_gz_files_when_the_raw_ones_are_absent(tiny, tmp_path):
    source, blobs = tiny
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, blob in blobs.items():
        (raw / f"{name}.gz").write_bytes(gzip.compress(blob))
    x_train, y_train, x_test, y_test = files.read_mnist(tmp_path)
    assert x_train.shape == (6, 1, 28, 28) and y_test.tolist() == [9, 2, 1]
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataMissing, match="damaged gzip"):
        files.read_mnist(tmp_path)


# -- the real files (KD_REAL_DATA=../shared/data) ----------------------------------------------------------
REAL = os.environ.get("KD_REAL_DATA")
real = pytest.mark.skipif(not REAL or not Path(REAL, "mnist").is_dir(),
                          reason="set KD_REAL_DATA to a folder holding mnist/ and fashion-mnist/ IDX files")


@real
@pytest.mark.parametrize("name, folder", [("mnist", "mnist"), ("fashion_mnist", "fashion-mnist")])
def test_real_files_import_and_read_as_published(tmp_path, name, folder):
    assert main(["download", name, "--from", str(Path(REAL, folder)), "--data-root", str(tmp_path)]) == 0
    x_train, y_train, x_test, y_test = files.read_mnist(tmp_path, name)
    assert x_train.shape == (60000, 1, 28, 28) and x_test.shape == (10000, 1, 28, 28)
    if name == "mnist":  # the published label counts (../shared/data/README.md)
        assert np.bincount(y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
        assert np.bincount(y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    else:
        assert np.bincount(y_train).tolist() == [6000] * 10 and np.bincount(y_test).tolist() == [1000] * 10
        assert y_test[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    spec = build_data(DataConfig(name, root=str(tmp_path), batch_size=500, test_subset=500))
    pixels = x_train.astype(np.float64) / 255   # the recorded normalisation is the train split's
    assert (round(pixels.mean(), 4),) == spec.mean and (round(pixels.std(), 4),) == spec.std


@real
def test_a_short_real_fashion_mnist_training_learns(tmp_path, capsys):
    """ResNet-8 on 2,000 real Fashion-MNIST images for 2 epochs: far below chance (90% error) on 2,000
    test images, through the CLI as a user runs it."""
    root = tmp_path / "data"
    assert main(["download", "fashion_mnist", "--from", str(Path(REAL, "fashion-mnist")), "--data-root", str(root)]) == 0
    config = tmp_path / "short.yaml"
    config.write_text("model: cifar_resnet8\ndataset: fashion_mnist\naugment: none\nbatch_size: 64\n"
                      "train_subset: 2000\ntest_subset: 2000\n"
                      "train: {length: 2, optim: {lr: 0.05, schedule: cosine}}\n")
    assert main(["run", str(config), "--data", "real", "--data-root", str(root), "--runs-dir", str(tmp_path / "runs"),
                 "--results-dir", str(tmp_path / "results")]) == 0
    error = float(capsys.readouterr().out.split("top-1 error ")[1].split("%")[0])
    assert error < 35.0
