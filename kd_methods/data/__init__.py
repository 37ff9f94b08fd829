"""Datasets and loaders: `build_data(DataConfig(name=...), device, rank, world_size) -> DataBundle`.

CIFAR-shaped sets live on the device and are shuffled, augmented and normalised there in batched tensor
ops; ImageNet and CUB are decoded by DataLoader workers. Every epoch's order and augmentation is a pure
function of (seed, epoch): see `sampling`. The dataset table is in `datasets`.
"""
from . import datasets as _datasets  # noqa: F401  (fills DATASETS)
from . import market1501 as _market1501  # noqa: F401  (registers "market1501")
from .core import (DATASETS, DataBundle, DataConfig, DatasetSpec, build_data, download, get_spec,
                   stratified_first)
from .folder import FolderLoader
from .preprocess import ZCA, gcn_zca, global_contrast_normalize
from .synthetic import make_synthetic
from .tensor_loader import TensorLoader, crop_flip

__all__ = ["DATASETS", "DataBundle", "DataConfig", "DatasetSpec", "FolderLoader", "TensorLoader", "ZCA",
           "build_data", "crop_flip", "download", "gcn_zca", "get_spec", "global_contrast_normalize",
           "make_synthetic", "stratified_first"]
