"""The data entry point: `build_data(DataConfig, device, rank, world_size) -> DataBundle`.

Every dataset is one `DatasetSpec` in the `DATASETS` registry (see `datasets.py` for the table). Two
kinds exist: "tensor" sets (synthetic, CIFAR, SVHN, MNIST) are read into arrays and served by a
device-resident `TensorLoader`; "folder" sets (ImageNet, CUB) are lists of image files served by a
`FolderLoader`. Both loaders follow one protocol: `len(loader)` batches per epoch, `set_epoch(e)`,
iteration yields `(float32 NCHW normalised images, int64 targets)` on the device.

Retrieval datasets (Market-1501) also carry query and gallery splits (`DataBundle.retrieval`), which the
engine scores with CMC rank-k and mAP (`kd_methods.eval_reid`) after the last epoch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import torch

from ..errors import ConfigError
from ..registry import Registry, UnknownName
from .folder import FOLDER_AUGMENTS, FolderLoader, Samples
from .preprocess import gcn_zca
from .synthetic import channel_stats
from .tensor_loader import TENSOR_AUGMENTS, TensorLoader

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # x_train, y_train, x_test, y_test
Gallery = list[tuple[str, int, int]]  # (image path, identity, camera) of a retrieval split


@dataclass
class DataConfig:
    name: str                             # a DATASETS entry, e.g. synthetic100, cifar100, imagenet
    root: str = "data"                    # real datasets live in root/<name>/
    augment: Optional[str] = None         # None: dataset default | none | crop_flip | crop_flip_reflect | imagenet
    preprocess: str = "standard"          # standard (per-channel mean/std) | zca (GCN + ZCA fitted on train)
    train_subset: Optional[int] = None    # first-N class-stratified subset (synthetic: the set's size)
    test_subset: Optional[int] = None
    batch_size: int = 128                 # per rank
    eval_batch_size: int = 512
    seed: int = 0                         # shuffle and augmentation; the synthetic images do not depend on it
    download: bool = False                # fetch with torchvision (md5-verified) before reading
    num_workers: int = field(default_factory=lambda: min(8, os.cpu_count() or 1))  # folder datasets only


@dataclass(frozen=True)
class DatasetSpec:
    title: str                                  # for messages: "CIFAR-100"
    input_size: tuple[int, int, int]            # (C, H, W) of the images the model sees
    num_classes: Optional[int]                  # None: counted from the files (folder datasets)
    default_augment: str
    mean: Optional[tuple[float, ...]] = None    # None: per-channel statistics of the train split
    std: Optional[tuple[float, ...]] = None
    read: Optional[Callable[[DataConfig], Arrays]] = None                 # tensor datasets
    scan: Optional[Callable[[str], tuple[Samples, Samples, int]]] = None  # folder datasets
    fetch: Optional[Callable[[str], Path]] = None                         # download(root) if possible
    retrieval: Optional[Callable[[str], tuple[Gallery, Gallery]]] = None  # (query, gallery) of root
    no_download: str = ""                       # why it cannot be downloaded (when fetch is None)

    @property
    def kind(self) -> str:
        return "tensor" if self.read is not None else "folder"

    @property
    def generated(self) -> bool:
        """Made in memory from a seed (the synthetic sets): nothing to download, never missing."""
        return self.fetch is None and not self.no_download


DATASETS: Registry[DatasetSpec] = Registry("dataset")
PREPROCESS = ("standard", "zca")


@dataclass
class DataBundle:
    num_classes: int
    input_size: tuple[int, int, int]
    train: Union[TensorLoader, FolderLoader]  # shuffled, augmented, drops the last partial batch
    test: Union[TensorLoader, FolderLoader]   # in order, not augmented, keeps the last partial batch
    name: str
    n_train: int                              # images in the split (all ranks together)
    n_test: int
    mean: tuple[float, ...] = ()              # the normalisation applied (0 and 1 after ZCA)
    std: tuple[float, ...] = ()
    augment: str = "none"                     # the train augmentation in effect
    retrieval: Optional["RetrievalSplits"] = None  # query/gallery of re-ID datasets


@dataclass
class RetrievalSplits:
    """Query and gallery images in file order, each loader over the whole split on every rank."""
    query: FolderLoader
    gallery: FolderLoader
    query_ids: list[int]
    query_cams: list[int]
    gallery_ids: list[int]
    gallery_cams: list[int]


def get_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS.get(name)
    except UnknownName as err:
        raise ConfigError(str(err)) from None


def stratified_first(labels: np.ndarray, n: int) -> np.ndarray:
    """Sorted indices of a deterministic class-balanced subset of size n: the first image of every class
    (in file order), then the second of every class, and so on."""
    labels = np.asarray(labels)
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    first = np.searchsorted(sorted_labels, sorted_labels, side="left")  # start of each label's run
    rank_in_class = np.empty(len(labels), dtype=np.int64)
    rank_in_class[order] = np.arange(len(labels)) - first
    return np.sort(np.lexsort((np.arange(len(labels)), rank_in_class))[:n])


def _subset(n_available: int, n: Optional[int], labels, what: str, name: str) -> Optional[np.ndarray]:
    """Indices of the subset, or None for the whole split."""
    if n is None or n == n_available:
        return None
    if n > n_available:
        raise ConfigError(f"{what}={n} but {name} has only {n_available} images in that split; "
                          f"lower it or leave it unset")
    return stratified_first(labels, n)


def _check(cfg: DataConfig, spec: DatasetSpec, rank: int, world_size: int) -> str:
    """Validate the config against the dataset; return the augmentation in effect."""
    augment = cfg.augment or spec.default_augment
    valid = TENSOR_AUGMENTS if spec.kind == "tensor" else FOLDER_AUGMENTS
    if augment not in valid:
        raise ConfigError(f"augment '{augment}' does not apply to {cfg.name}; use one of {', '.join(valid)}")
    if cfg.preprocess not in PREPROCESS:
        raise ConfigError(f"unknown preprocess '{cfg.preprocess}'; use one of {', '.join(PREPROCESS)}")
    if cfg.preprocess == "zca" and spec.kind != "tensor":
        raise ConfigError(f"preprocess 'zca' is only available for CIFAR-shaped datasets, not {cfg.name}")
    for key in ("batch_size", "eval_batch_size", "train_subset", "test_subset"):
        value = getattr(cfg, key)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ConfigError(f"{key} must be a positive integer, got {value!r}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} is not in [0, world_size={world_size})")
    return augment


def download(name: str, root: str = "data") -> Optional[Path]:
    """Fetch a downloadable dataset (cifar10, cifar100, svhn, mnist) into root/<name> with torchvision;
    returns that folder, or None for generated (synthetic) sets, which need nothing."""
    spec = get_spec(name)
    if spec.fetch is not None:
        return spec.fetch(root)
    if spec.no_download:
        raise ConfigError(spec.no_download)
    return None


def build_data(cfg: DataConfig, device: Union[torch.device, str] = "cpu", rank: int = 0,
               world_size: int = 1) -> DataBundle:
    """The train and test loaders of `cfg.name` for this rank, with images on `device`."""
    spec = get_spec(cfg.name)
    augment = _check(cfg, spec, rank, world_size)
    device = torch.device(device)
    if cfg.download and (spec.fetch is not None or spec.no_download):
        if rank == 0:
            download(cfg.name, cfg.root)
        if world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
    if spec.kind == "tensor":
        bundle = _tensor_bundle(cfg, spec, augment, device, rank, world_size)
    else:
        bundle = _folder_bundle(cfg, spec, augment, device, rank, world_size)
    if bundle.n_train < cfg.batch_size * world_size:
        raise ConfigError(f"{cfg.name}: the train split has {bundle.n_train} images, fewer than one batch of "
                          f"{cfg.batch_size} x {world_size} rank(s); lower batch_size or raise train_subset")
    return bundle


def _tensor_bundle(cfg, spec, augment, device, rank, world_size) -> DataBundle:
    x_train, y_train, x_test, y_test = spec.read(cfg)
    keep_train = _subset(len(y_train), cfg.train_subset, y_train, "train_subset", spec.title)
    keep_test = _subset(len(y_test), cfg.test_subset, y_test, "test_subset", spec.title)
    if keep_train is not None:
        x_train, y_train = x_train[keep_train], y_train[keep_train]
    if keep_test is not None:
        x_test, y_test = x_test[keep_test], y_test[keep_test]

    def on_device(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.array(a, copy=True)).to(device)

    x_train, y_train, x_test, y_test = map(on_device, (x_train, y_train, x_test, y_test))
    channels = x_train.shape[1]
    if cfg.preprocess == "zca":
        x_train, x_test = gcn_zca(x_train, x_test)
        mean, std = (0.0,) * channels, (1.0,) * channels
    elif spec.mean is not None:
        mean, std = spec.mean, spec.std
    else:
        mean, std = channel_stats(x_train.cpu().numpy())
    common = dict(mean=mean, std=std, seed=cfg.seed, rank=rank, world_size=world_size)
    train = TensorLoader(x_train, y_train, batch_size=cfg.batch_size, train=True, augment=augment, **common)
    test = TensorLoader(x_test, y_test, batch_size=cfg.eval_batch_size, train=False, **common)
    return DataBundle(spec.num_classes, tuple(x_train.shape[1:]), train, test, cfg.name,
                      len(y_train), len(y_test), tuple(mean), tuple(std), augment)


def _folder_bundle(cfg, spec, augment, device, rank, world_size) -> DataBundle:
    train_samples, test_samples, num_classes = spec.scan(cfg.root)

    def pick(samples: Samples, n: Optional[int], what: str) -> Samples:
        keep = _subset(len(samples), n, [label for _, label in samples], what, spec.title)
        return samples if keep is None else [samples[i] for i in keep]

    train_samples = pick(train_samples, cfg.train_subset, "train_subset")
    test_samples = pick(test_samples, cfg.test_subset, "test_subset")
    common = dict(mean=spec.mean, std=spec.std, seed=cfg.seed, rank=rank, world_size=world_size,
                  device=device, num_workers=cfg.num_workers, size=spec.input_size[1:])
    train = FolderLoader(train_samples, batch_size=cfg.batch_size, train=True, augment=augment, **common)
    test = FolderLoader(test_samples, batch_size=cfg.eval_batch_size, train=False, **common)
    retrieval = None
    if spec.retrieval is not None:
        def loader(split: Gallery) -> FolderLoader:  # ranking needs every image: not sharded
            return FolderLoader([(path, 0) for path, _, _ in split], batch_size=cfg.eval_batch_size,
                                train=False, **{**common, "rank": 0, "world_size": 1})

        query, gallery = spec.retrieval(cfg.root)
        retrieval = RetrievalSplits(loader(query), loader(gallery), [q[1] for q in query],
                                    [q[2] for q in query], [g[1] for g in gallery], [g[2] for g in gallery])
    return DataBundle(num_classes, spec.input_size, train, test, cfg.name, len(train_samples),
                      len(test_samples), spec.mean, spec.std, augment, retrieval)
