"""Image-file datasets (ImageNet, CUB-200-2011): decoded by DataLoader workers, normalised on the device.

Layouts:
    ROOT/imagenet/{train,val}/<wnid>/*.JPEG          (val sorted into class folders, e.g. by valprep.sh)
    ROOT/cub200/CUB_200_2011/{images.txt, train_test_split.txt, image_class_labels.txt, images/...}

Transforms (augment "imagenet", ImageNet and CUB): train = RandomResizedCrop(224, scale (0.08, 1), ratio
(3/4, 4/3)) + horizontal flip; test = Resize(256) + CenterCrop(224) (other input sizes: see `ImageFiles`).
Augment "reid" (Market-1501): train = resize to the input size + horizontal flip, as re-ID training does
(a random resized crop would cut people apart); test = the same resize. Workers return uint8
tensors (a quarter of the host->device traffic of float32); the loader moves them with non_blocking copies
from pinned memory and normalises on the device. The train crop and flip of sample i in epoch e come from
a generator seeded by (seed, e, i), so the batches of an epoch do not depend on the number of workers or
on the process's global RNG, and a resumed run reproduces them.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator, Sequence

import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..errors import DataMissing
from .sampling import AUGMENT, EpochLoader, epoch_order, generator

Samples = list[tuple[str, int]]  # (image path, class index)
FOLDER_AUGMENTS = ("imagenet", "reid", "none")


def random_resized_crop_box(height: int, width: int, g: torch.Generator, scale=(0.08, 1.0),
                            ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(top, left, h, w) of an Inception-style crop: area fraction ~ U(scale), log aspect ~ U(log ratio);
    10 tries, then the largest centred crop with the aspect ratio clamped to `ratio`."""
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        u_area, u_ratio = torch.rand(2, generator=g).tolist()
        target = area * (scale[0] + (scale[1] - scale[0]) * u_area)
        aspect = math.exp(log_lo + (log_hi - log_lo) * u_ratio)
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=g))
            left = int(torch.randint(0, width - w + 1, (1,), generator=g))
            return top, left, h, w
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class ImageFiles(Dataset):
    """Indexed by `(i, epoch)`, so the augmentation of a sample is a pure function of (seed, epoch, i).

    size (h, w) and augment: "imagenet" = random resized crop to (h, w) + flip; "reid" = resize to (h, w)
    + flip; "none" (test) = Resize(256/224 * h) + CenterCrop for square sizes (the ImageNet protocol), a
    plain resize to (h, w) otherwise (the re-ID protocol).
    """

    def __init__(self, samples: Samples, augment: str, seed: int, size: tuple[int, int] = (224, 224)):
        self.samples, self.augment, self.seed, self.size = samples, augment, seed, list(size)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, int]:
        i, epoch = key
        path, label = self.samples[i]
        with Image.open(path) as f:
            img = f.convert("RGB")
        h, w = self.size
        if self.augment != "none":
            g = generator(self.seed, epoch, AUGMENT, i)
            if self.augment == "imagenet":
                top, left, box_h, box_w = random_resized_crop_box(img.height, img.width, g)
                img = TF.resized_crop(img, top, left, box_h, box_w, self.size, antialias=True)
            else:
                img = TF.resize(img, self.size, antialias=True)
            if torch.rand(1, generator=g).item() < 0.5:
                img = TF.hflip(img)
        elif h == w:
            img = TF.center_crop(TF.resize(img, round(h * 256 / 224), antialias=True), self.size)
        else:
            img = TF.resize(img, self.size, antialias=True)
        return TF.pil_to_tensor(img), label


class FolderLoader(EpochLoader):
    """Same protocol as `TensorLoader` (len, set_epoch, iteration yields device tensors) over image files."""

    def __init__(self, samples: Samples, *, batch_size: int, mean: Sequence[float], std: Sequence[float],
                 train: bool, augment: str = "imagenet", seed: int = 0, rank: int = 0, world_size: int = 1,
                 device: torch.device | str = "cpu", num_workers: int = 4,
                 size: tuple[int, int] = (224, 224)):
        if augment not in FOLDER_AUGMENTS:
            raise ValueError(f"unknown augmentation {augment!r}; valid: {', '.join(FOLDER_AUGMENTS)}")
        self.device = torch.device(device)
        super().__init__(batch_size=batch_size, train=train, seed=seed, rank=rank, world_size=world_size,
                         mean=mean, std=std, scale=1.0 / 255, device=self.device)
        self.samples, self.num_samples = samples, len(samples)
        self.dataset = ImageFiles(samples, augment if train else "none", seed=seed, size=size)
        self._loader = DataLoader(self.dataset, batch_sampler=_Batches(self), num_workers=num_workers,
                                  pin_memory=self.device.type == "cuda",
                                  persistent_workers=num_workers > 0)

    def batches(self) -> Iterator[list[tuple[int, int]]]:
        """This rank's batches of the current epoch as lists of dataset keys `(i, epoch)`."""
        epoch = self.epoch
        order = epoch_order(self.num_samples, self.seed, epoch, shuffle=self.train)
        for pos in self.positions():
            yield [(i, epoch) for i in order[pos].tolist()]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for images, targets in self._loader:
            images = images.to(self.device, non_blocking=True)
            yield self.normalize(images), targets.to(self.device, non_blocking=True)


class _Batches:
    """The DataLoader's batch sampler: the owning loader's batches of its current epoch."""

    def __init__(self, loader: FolderLoader):
        self.loader = loader

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return self.loader.batches()

    def __len__(self) -> int:
        return len(self.loader)


def scan_imagenet(root: str | Path) -> tuple[Samples, Samples, int]:
    """(train samples, val samples, number of classes) from ROOT/imagenet/{train,val}/<wnid>/*."""
    from torchvision.datasets import ImageFolder

    where = Path(root) / "imagenet"
    hint = ("download ILSVRC2012 from image-net.org, extract train/ and val/ there with one folder per "
            "wnid (val sorted by valprep.sh), or pass --data-root DIR, or use --data synthetic_imagenet")
    splits = []
    for split in ("train", "val"):
        folder = where / split
        if not folder.is_dir():
            raise DataMissing(f"ImageNet not found under {where} (no {split}/); {hint}")
        try:
            splits.append(ImageFolder(str(folder)))
        except (FileNotFoundError, RuntimeError) as err:  # no class folders / no images
            raise DataMissing(f"ImageNet {split}/ under {where} holds no images in class folders ({err}); "
                              f"{hint}") from None
    train, val = splits
    if train.classes != val.classes:
        raise DataMissing(f"ImageNet train/ and val/ under {where} have different class folders "
                          f"({len(train.classes)} vs {len(val.classes)}); {hint}")
    return list(train.samples), list(val.samples), len(train.classes)


def scan_cub200(root: str | Path) -> tuple[Samples, Samples, int]:
    """(train samples, test samples, number of classes) from the official CUB-200-2011 split files."""
    where = Path(root) / "cub200" / "CUB_200_2011"
    hint = ("download CUB_200_2011.tgz from the Caltech-UCSD Birds page and extract it into "
            f"{where.parent}, or pass --data-root DIR")
    tables = {}
    for name in ("images.txt", "train_test_split.txt", "image_class_labels.txt"):
        path = where / name
        if not path.is_file():
            raise DataMissing(f"CUB-200-2011 not found under {where} ({name} is missing); {hint}")
        try:
            rows = [line.split(maxsplit=1) for line in path.read_text().splitlines() if line.strip()]
            tables[name] = {int(key): value.strip() for key, value in rows}
        except ValueError:
            raise DataMissing(f"{path} is not a list of '<image id> <value>' lines; {hint}") from None
    images, is_train, labels = (tables[n] for n in ("images.txt", "train_test_split.txt",
                                                    "image_class_labels.txt"))
    if not images.keys() == is_train.keys() == labels.keys():
        raise DataMissing(f"CUB-200-2011 under {where}: images.txt, train_test_split.txt and "
                          f"image_class_labels.txt list different image ids; {hint}")
    train, test = [], []
    for image_id, rel in sorted(images.items()):
        path = where / "images" / rel
        if not path.is_file():
            raise DataMissing(f"CUB-200-2011 image {path} is missing; {hint}")
        (train if is_train[image_id] == "1" else test).append((str(path), int(labels[image_id]) - 1))
    num_classes = max(label for _, label in train + test) + 1
    return train, test, num_classes
