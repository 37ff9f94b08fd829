"""The dataset table: every name `DataConfig.name` accepts, with its shape, normalisation and defaults.

| name               | classes | input     | train / test          | default augment | normalisation            |
|--------------------|---------|-----------|-----------------------|-----------------|--------------------------|
| synthetic10        | 10      | 3x32x32   | 10000 / 2000 (gen.)   | crop_flip       | stats of its train split |
| synthetic100       | 100     | 3x32x32   | 10000 / 2000 (gen.)   | crop_flip       | stats of its train split |
| synthetic10_16px   | 10      | 3x16x16   | 10000 / 2000 (gen.)   | crop_flip       | stats of its train split |
| synthetic100_16px  | 100     | 3x16x16   | 10000 / 2000 (gen.)   | crop_flip       | stats of its train split |
| synthetic_mnist    | 10      | 1x28x28   | 10000 / 2000 (gen.)   | none            | stats of its train split |
| synthetic_imagenet | 1000    | 3x224x224 | 512 / 256 (gen.)      | none            | ImageNet constants       |
| cifar10            | 10      | 3x32x32   | 50000 / 10000         | crop_flip       | CIFAR-10 train stats     |
| cifar100           | 100     | 3x32x32   | 50000 / 10000         | crop_flip       | CIFAR-100 train stats    |
| svhn               | 10      | 3x32x32   | 73257 / 26032         | none            | SVHN train stats         |
| mnist              | 10      | 1x28x28   | 60000 / 10000         | none            | MNIST train stats        |
| fashion_mnist      | 10      | 1x28x28   | 60000 / 10000         | none            | Fashion-MNIST train stats|
| imagenet           | folders | 3x224x224 | 1281167 / 50000       | imagenet        | ImageNet constants       |
| cub200             | 200     | 3x224x224 | 5994 / 5794           | imagenet        | ImageNet constants       |

The per-channel constants are the means and standard deviations of each real train split (pixels in
[0, 1]); the synthetic sets compute theirs from the split in use. The synthetic images use the fixed data
seed 0, so the runs of different seeds see the same data (as they would with a real dataset). The 16x16
variants are the smoke budget's stand-ins for 32x32 sets (a quarter of the arithmetic of every network that
takes any image size: `kd_methods.runs.spec.SMALL_STANDIN`).
SVHN and MNIST default to no augmentation (flipping digits changes their meaning), Fashion-MNIST too (as in
its benchmark). MNIST and Fashion-MNIST keep their single grey channel: a model built for them gets
`in_chans=1`. SVHN's 531k "extra" images are not used.
"""
from __future__ import annotations

from functools import partial

from . import files
from .core import DATASETS, DataConfig, DatasetSpec
from .folder import scan_cub200, scan_imagenet
from .synthetic import make_synthetic, make_synthetic_imagenet

SYNTHETIC_SIZES = {"train": 10_000, "test": 2_000}
SYNTHETIC_IMAGENET_SIZES = {"train": 512, "test": 256}
DATA_SEED = 0
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _split_sizes(cfg: DataConfig, default: dict[str, int]) -> tuple[int, int]:
    return cfg.train_subset or default["train"], cfg.test_subset or default["test"]


def _read_synthetic(cfg: DataConfig, num_classes: int, groups: int, channels: int, size: int):
    n_train, n_test = _split_sizes(cfg, SYNTHETIC_SIZES)
    make = partial(make_synthetic, num_classes, groups, seed=DATA_SEED, channels=channels, size=size)
    return (*make(n_train, "train"), *make(n_test, "test"))


def _read_synthetic_imagenet(cfg: DataConfig):
    n_train, n_test = _split_sizes(cfg, SYNTHETIC_IMAGENET_SIZES)
    return (*(t.numpy() for t in make_synthetic_imagenet(n_train, "train", DATA_SEED)),
            *(t.numpy() for t in make_synthetic_imagenet(n_test, "test", DATA_SEED)))


def _register(name: str, spec: DatasetSpec) -> None:
    DATASETS.register(name)(spec)


for _side, _suffix in ((32, ""), (16, "_16px")):
    _register(f"synthetic10{_suffix}", DatasetSpec(
        f"synthetic10{_suffix}", (3, _side, _side), 10, "crop_flip",
        read=partial(_read_synthetic, num_classes=10, groups=5, channels=3, size=_side)))
    _register(f"synthetic100{_suffix}", DatasetSpec(
        f"synthetic100{_suffix}", (3, _side, _side), 100, "crop_flip",
        read=partial(_read_synthetic, num_classes=100, groups=20, channels=3, size=_side)))
_register("synthetic_mnist", DatasetSpec(
    "synthetic_mnist", (1, 28, 28), 10, "none",
    read=partial(_read_synthetic, num_classes=10, groups=5, channels=1, size=28)))
_register("synthetic_imagenet", DatasetSpec(
    "synthetic_imagenet", (3, 224, 224), 1000, "none", IMAGENET_MEAN, IMAGENET_STD,
    read=_read_synthetic_imagenet))

_register("cifar10", DatasetSpec(
    "CIFAR-10", (3, 32, 32), 10, "crop_flip", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
    read=lambda cfg: files.read_cifar(cfg.root, 10), fetch=partial(files.download, "cifar10")))
_register("cifar100", DatasetSpec(
    "CIFAR-100", (3, 32, 32), 100, "crop_flip", (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
    read=lambda cfg: files.read_cifar(cfg.root, 100), fetch=partial(files.download, "cifar100")))
_register("svhn", DatasetSpec(
    "SVHN", (3, 32, 32), 10, "none", (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970),
    read=lambda cfg: files.read_svhn(cfg.root), fetch=partial(files.download, "svhn")))
_register("mnist", DatasetSpec(
    "MNIST", (1, 28, 28), 10, "none", (0.1307,), (0.3081,),
    read=lambda cfg: files.read_mnist(cfg.root), fetch=partial(files.download, "mnist")))
_register("fashion_mnist", DatasetSpec(
    "Fashion-MNIST", (1, 28, 28), 10, "none", (0.2860,), (0.3530,),
    read=lambda cfg: files.read_mnist(cfg.root, "fashion_mnist"), fetch=partial(files.download, "fashion_mnist")))

_register("imagenet", DatasetSpec(
    "ImageNet", (3, 224, 224), None, "imagenet", IMAGENET_MEAN, IMAGENET_STD, scan=scan_imagenet,
    no_download="ImageNet cannot be downloaded automatically: get ILSVRC2012 from image-net.org and "
                "extract train/ and val/ (one folder per wnid) under DATA_ROOT/imagenet"))
_register("cub200", DatasetSpec(
    "CUB-200-2011", (3, 224, 224), None, "imagenet", IMAGENET_MEAN, IMAGENET_STD, scan=scan_cub200,
    no_download="CUB-200-2011 is not downloaded automatically: extract CUB_200_2011.tgz from the "
                "Caltech-UCSD Birds page into DATA_ROOT/cub200"))
