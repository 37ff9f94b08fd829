"""Readers for the small real datasets, in the on-disk layouts torchvision downloads:

    ROOT/cifar10/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}   (python pickles)
    ROOT/cifar100/cifar-100-python/{train, test, meta}
    ROOT/svhn/{train_32x32.mat, test_32x32.mat}                                     (MATLAB v5, needs scipy)
    ROOT/mnist/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte               (IDX)

Downloads go through torchvision (`download=True`), which verifies each archive's md5. Reading does not
go through torchvision's dataset classes: they re-check the md5 of every file on each construction (and so
refuse anything but the exact published files, e.g. the small files the tests write); we read the same
formats ourselves and check their structure instead (shapes, label ranges), so a damaged file gives a clear
error rather than a silent wrong result. Each reader returns uint8 NCHW images and int64 labels.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ..errors import DataMissing

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # x_train, y_train, x_test, y_test


def missing(title: str, where: Path, what: str, name: str) -> DataMissing:
    return DataMissing(
        f"{title} not found under {where} ({what}); run `kd-bench download {name}` on a machine with "
        f"internet, or pass --data-root DIR, or use --data synthetic")


# What a CIFAR batch file is made of: a dict of lists, strings, bytes and numbers, and numpy arrays, which
# pickle rebuilds through these functions (numpy 1.x names them numpy.core.*, numpy 2.x numpy._core.*).
# Nothing else may be loaded: a pickle names any importable callable and runs it.
PICKLE_GLOBALS = {("numpy", "ndarray"), ("numpy", "dtype")} | {
    (f"numpy.{core}.{module}", name) for core in ("core", "_core")
    for module, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"))}


class Refused(pickle.UnpicklingError):
    """A pickle naming a global that data files never hold."""


class DataUnpickler(pickle.Unpickler):
    """Loads plain data and numpy arrays; refuses every other global (no code from data files)."""

    def find_class(self, module: str, name: str):
        if (module, name) not in PICKLE_GLOBALS:
            raise Refused(f"{module}.{name}")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return DataUnpickler(f, encoding="latin1").load()
    except Refused as err:
        raise DataMissing(f"{path} asks to load {err}, which a CIFAR batch file never holds (a pickle can run "
                          f"code, so kd-bench reads only data and numpy arrays); delete it and download the "
                          f"dataset again") from None
    except Exception as err:  # truncated or garbled: whatever the pickle machine trips on
        raise DataMissing(f"{path} is damaged ({type(err).__name__}: {err}); delete it and download the "
                          f"dataset again") from None


def _cifar_split(paths: list[Path], label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for path in paths:
        entry = _unpickle(path)
        try:
            data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            target = np.asarray(entry[label_key], dtype=np.int64)
        except (KeyError, ValueError) as err:
            raise DataMissing(f"{path} is not a CIFAR batch file ({err!r}); delete it and download again") from None
        if len(data) != len(target) or (len(target) and not 0 <= target.min() <= target.max() < num_classes):
            raise DataMissing(f"{path} has inconsistent images and labels; delete it and download again")
        images.append(data)
        labels.append(target)
    return np.concatenate(images), np.concatenate(labels)


def read_cifar(root: str | Path, num_classes: int) -> Arrays:
    """CIFAR-10 (`num_classes=10`, under root/cifar10) or CIFAR-100 (100, under root/cifar100)."""
    name = f"cifar{num_classes}"
    where = Path(root) / name
    if num_classes == 10:
        folder, title, key = where / "cifar-10-batches-py", "CIFAR-10", "labels"
        train, test = [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]
    else:
        folder, title, key = where / "cifar-100-python", "CIFAR-100", "fine_labels"
        train, test = ["train"], ["test"]
    if not folder.is_dir():
        raise missing(title, where, f"no {folder.name}/", name)
    for file in train + test:
        if not (folder / file).is_file():
            raise missing(title, where, f"{folder.name}/{file} is missing", name)
    x_train, y_train = _cifar_split([folder / f for f in train], key, num_classes)
    x_test, y_test = _cifar_split([folder / f for f in test], key, num_classes)
    return x_train, y_train, x_test, y_test


def read_svhn(root: str | Path) -> Arrays:
    """SVHN cropped digits (train and test .mat files; the `extra` set is not used). Label 10 means 0."""
    where = Path(root) / "svhn"
    paths = [where / f"{split}_32x32.mat" for split in ("train", "test")]
    for path in paths:
        if not path.is_file():
            raise missing("SVHN", where, f"{path.name} is missing", "svhn")
    try:
        import scipy.io
    except ImportError:
        raise DataMissing("reading SVHN's .mat files needs scipy: pip install scipy") from None
    out = []
    for path in paths:
        try:
            mat = scipy.io.loadmat(path)
            images = np.ascontiguousarray(np.asarray(mat["X"], dtype=np.uint8).transpose(3, 2, 0, 1))
            labels = np.asarray(mat["y"], dtype=np.int64).reshape(-1) % 10
        except (KeyError, ValueError, OSError) as err:
            raise DataMissing(f"{path} is damaged ({err!r}); delete it and download again") from None
        if images.shape[1:] != (3, 32, 32) or len(images) != len(labels):
            raise DataMissing(f"{path} does not hold 32x32x3 images with one label each; download again")
        out += [images, labels]
    return tuple(out)


MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes (magic 0x0000 08 ndim, big-endian int32 sizes, then the data)."""
    raw = path.read_bytes()
    if len(raw) < 4 + 4 * ndim or raw[:4] != bytes([0, 0, 8, ndim]):
        raise DataMissing(f"{path} is not a {ndim}-d uint8 IDX file; delete it and download again")
    shape = tuple(int(s) for s in np.frombuffer(raw, ">i4", ndim, 4))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DataMissing(f"{path} is truncated; delete it and download again")
    return data.reshape(shape)


def read_mnist(root: str | Path) -> Arrays:
    """MNIST, kept as 1-channel 28x28 images (N, 1, 28, 28)."""
    where = Path(root) / "mnist"
    raw = where / "MNIST" / "raw"
    out = []
    for split in ("train", "test"):
        images_file, labels_file = (raw / f for f in MNIST_FILES[split])
        for f in (images_file, labels_file):
            if not f.is_file():
                raise missing("MNIST", where, f"MNIST/raw/{f.name} is missing", "mnist")
        images, labels = read_idx(images_file, 3), read_idx(labels_file, 1).astype(np.int64)
        if len(images) != len(labels):
            raise DataMissing(f"{images_file} and {labels_file} disagree in length; download again")
        out += [images[:, None].copy(), labels]
    return tuple(out)


def download(name: str, root: str | Path) -> Path:
    """Fetch a dataset with torchvision (md5-verified); files that are already intact are kept."""
    import torchvision.datasets as tvd

    where = Path(root) / name
    try:
        if name in ("cifar10", "cifar100"):
            cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
            cls(str(where), train=True, download=True)  # one archive holds both splits
        elif name == "svhn":
            from torchvision.datasets.utils import download_url
            for split in ("train", "test"):
                url, filename, md5 = tvd.SVHN.split_list[split]
                download_url(url, str(where), filename, md5)
        elif name == "mnist":
            tvd.MNIST(str(where), train=True, download=True)
            tvd.MNIST(str(where), train=False, download=True)
        else:
            raise ValueError(name)
    except (OSError, RuntimeError) as err:  # URLError is an OSError
        raise DataMissing(f"downloading {name} into {where} failed ({err}); check the internet connection, "
                          f"or copy the files there by hand") from None
    return where
