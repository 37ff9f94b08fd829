"""Market-1501 person re-identification (Zheng et al., ICCV 2015), as used by DML Tables 3 and 4.

Layout (the dataset's own archive, extracted under DATA_ROOT/market1501):

    bounding_box_train/   12,936 images of the 751 training identities
    bounding_box_test/    the gallery: 750 test identities, distractors (0000) and junk boxes (-1)
    query/                3,368 query images of the 750 test identities

A file name such as ``0002_c1s1_000451_03.jpg`` reads: person 0002, camera 1 (sequence 1, frame 451,
box 3); junk boxes are named ``-1_c...``. Training relabels the 751 training identities to classes
0..750 in increasing id order (DML trains a 751-way classifier). Query and gallery images keep their raw
person id and camera, which the evaluation needs: see `kd_methods.eval_reid` for the protocol (same id
and same camera = junk; id -1 = junk; id 0 = distractor, a negative).

The registry entry's train split is the training images; its classification "test" split is every
10th training image under test-time transforms (a cheap per-epoch training-error probe), because the 750
test identities are not among the 751 classes, so a classification error on them is undefined.
Re-identification quality (rank-1, rank-5, rank-10, mAP) is what the paper reports: the registry entry's
`retrieval` hands the query and gallery to the engine, which scores them with `kd_methods.eval_reid`
after the last epoch. Training images are resized to 256x128 and flipped (augment "reid").
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataMissing
from .core import DATASETS, DatasetSpec

SPLITS = ("bounding_box_train", "bounding_box_test", "query")
NAME = re.compile(r"^(-?\d+)_c(\d+)")
JUNK, DISTRACTOR = -1, 0
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
INPUT_SIZE = (3, 256, 128)  # the usual re-ID input (height 256, width 128)
HINT = ("download Market-1501-v15.09.15.zip from the dataset's page and extract bounding_box_train/, "
        "bounding_box_test/ and query/ into {where}, or pass --data-root DIR")


@dataclass(frozen=True)
class ReidImage:
    path: str
    pid: int      # person id as in the file name (-1 junk, 0 distractor)
    camid: int    # camera 1..6


@dataclass
class Market1501:
    train: list[tuple[str, int]]   # (path, class 0..num_classes-1)
    query: list[ReidImage]
    gallery: list[ReidImage]
    num_classes: int
    train_pids: list[int]          # class index -> person id


def parse_name(name: str) -> tuple[int, int]:
    """(person id, camera) of a Market-1501 file name such as '0002_c1s1_000451_03.jpg'."""
    m = NAME.match(Path(name).name)
    if not m:
        raise ValueError(f"'{name}' is not a Market-1501 image name (expected e.g. 0002_c1s1_000451_03.jpg)")
    return int(m.group(1)), int(m.group(2))


def _read_split(folder: Path) -> list[ReidImage]:
    out = []
    for path in sorted(folder.glob("*.jpg")):
        try:
            pid, cam = parse_name(path.name)
        except ValueError:
            raise DataMissing(f"Market-1501 file {path} does not follow the <id>_c<camera>... naming; "
                              f"remove it or re-extract the dataset") from None
        out.append(ReidImage(str(path), pid, cam))
    return out


def load_market1501(root: str | Path) -> Market1501:
    """The three splits of ROOT/market1501; junk and distractor boxes are left out of training only."""
    where = Path(root) / "market1501"
    for split in SPLITS:
        if not (where / split).is_dir():
            raise DataMissing(f"Market-1501 not found under {where} (no {split}/); {HINT.format(where=where)}")
    train_images, gallery, query = (_read_split(where / s) for s in SPLITS)
    train_images = [im for im in train_images if im.pid not in (JUNK, DISTRACTOR)]
    if not train_images or not query or not gallery:
        empty = next(s for s, imgs in zip(SPLITS, (train_images, gallery, query)) if not imgs)
        raise DataMissing(f"Market-1501 {empty}/ under {where} holds no usable .jpg images; "
                          f"{HINT.format(where=where)}")
    pids = sorted({im.pid for im in train_images})
    label = {pid: i for i, pid in enumerate(pids)}
    train = [(im.path, label[im.pid]) for im in train_images]
    return Market1501(train=train, query=query, gallery=gallery, num_classes=len(pids), train_pids=pids)


TRAIN_PROBE_EVERY = 10


def scan_market1501(root: str | Path) -> tuple[list[tuple[str, int]], list[tuple[str, int]], int]:
    """The registry's (train, classification probe, num_classes): see the module docstring."""
    data = load_market1501(root)
    return data.train, data.train[::TRAIN_PROBE_EVERY], data.num_classes


def retrieval_market1501(root: str | Path) -> tuple[list[tuple[str, int, int]], list[tuple[str, int, int]]]:
    """(query, gallery) as (path, person id, camera), in file order."""
    data = load_market1501(root)
    return ([(im.path, im.pid, im.camid) for im in data.query],
            [(im.path, im.pid, im.camid) for im in data.gallery])


DATASETS.register("market1501")(DatasetSpec(
    "Market-1501", INPUT_SIZE, None, "reid", IMAGENET_MEAN, IMAGENET_STD, scan=scan_market1501,
    retrieval=retrieval_market1501,
    no_download="Market-1501 is not downloaded automatically: " + HINT.format(where="DATA_ROOT/market1501")))
