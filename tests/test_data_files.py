"""Real datasets read from tiny files written in the real on-disk formats (pickles, .mat, IDX, JPEG trees)."""
import io
import os
import pickle
import pickletools
import struct
import subprocess

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from kd_methods.data import DataConfig, build_data, download
from kd_methods.data.folder import random_resized_crop_box
from kd_methods.errors import DataMissing

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def _pickle(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _rows(rng, n):
    """n CIFAR images as the files store them: (n, 3072) uint8 rows, red plane, then green, then blue."""
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8)


def write_cifar10(root, per_batch=4, n_test=5, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "cifar10" / "cifar-10-batches-py"
    train_rows, train_labels = [], []
    for i in range(1, 6):
        rows, labels = _rows(rng, per_batch), rng.integers(0, 10, per_batch).tolist()
        _pickle(folder / f"data_batch_{i}", {"batch_label": f"training batch {i} of 5", "data": rows,
                                              "labels": labels, "filenames": [f"{i}_{j}.png" for j in range(4)]})
        train_rows.append(rows)
        train_labels += labels
    test_rows, test_labels = _rows(rng, n_test), rng.integers(0, 10, n_test).tolist()
    _pickle(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "data": test_rows,
                                     "labels": test_labels, "filenames": []})
    _pickle(folder / "batches.meta", {"label_names": [f"c{k}" for k in range(10)], "num_cases_per_batch": 4,
                                       "num_vis": 3072})
    return np.concatenate(train_rows), np.array(train_labels), test_rows, np.array(test_labels)


def write_cifar100(root, test_labels=(5, 5, 7, 9, 7, 3), n_train=12, seed=1):
    rng = np.random.default_rng(seed)
    folder = root / "cifar100" / "cifar-100-python"
    out = []
    for split, fine in (("train", rng.integers(0, 100, n_train).tolist()), ("test", list(test_labels))):
        rows = _rows(rng, len(fine))
        _pickle(folder / split, {"filenames": [], "batch_label": split, "fine_labels": fine,
                                 "coarse_labels": [f // 5 for f in fine], "data": rows})
        out += [rows, np.array(fine)]
    _pickle(folder / "meta", {"fine_label_names": [f"f{k}" for k in range(100)],
                              "coarse_label_names": [f"g{k}" for k in range(20)]})
    return out


def _served(loader):
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


def test_cifar10_reads_the_pickle_batches(tmp_path):
    x_train, y_train, x_test, y_test = write_cifar10(tmp_path)
    data = build_data(DataConfig("cifar10", root=str(tmp_path), batch_size=4, eval_batch_size=2))
    assert (data.num_classes, data.n_train, data.n_test, data.input_size) == (10, 20, 5, (3, 32, 32))
    assert data.mean == CIFAR10_MEAN and len(data.train) == 5 and len(data.test) == 3
    x, y = _served(data.test)
    assert y.tolist() == y_test.tolist()
    pixels = torch.from_numpy(x_test.reshape(-1, 3, 32, 32)).float() / 255
    mean, std = torch.tensor(CIFAR10_MEAN)[:, None, None], torch.tensor(CIFAR10_STD)[:, None, None]
    assert torch.allclose(x, (pixels - mean) / std, atol=1e-5)
    # the row layout: value [c*1024 + h*32 + w] is channel c, row h, column w
    assert x[2, 1, 3, 7].item() == pytest.approx((x_test[2, 1024 + 3 * 32 + 7] / 255 - mean[1, 0, 0].item())
                                                / std[1, 0, 0].item(), abs=1e-5)
    _, labels = _served(data.train)
    assert sorted(labels.tolist()) == sorted(y_train.tolist())


def test_torchvision_refuses_these_files_which_is_why_we_read_them_ourselves(tmp_path):
    write_cifar10(tmp_path)
    with pytest.raises(RuntimeError, match="corrupted"):
        torchvision.datasets.CIFAR10(str(tmp_path / "cifar10"), train=True, download=False)


def test_cifar100_uses_fine_labels_and_subsets(tmp_path):
    x_train, y_train, x_test, y_test = write_cifar100(tmp_path)
    data = build_data(DataConfig("cifar100", root=str(tmp_path), batch_size=3, test_subset=4,
                                 augment="none"))
    assert data.num_classes == 100 and data.n_train == 12 and data.n_test == 4
    x, y = _served(data.test)
    assert y.tolist() == [5, 7, 9, 3]                    # the first image of each class, in file order
    assert torch.allclose(x[1] * torch.tensor(data.std)[:, None, None] + torch.tensor(data.mean)[:, None, None],
                          torch.from_numpy(x_test[2].reshape(3, 32, 32)).float() / 255, atol=1e-5)
    _, labels = _served(data.train)
    assert sorted(labels.tolist()) == sorted(y_train.tolist())


def test_missing_cifar_names_the_path_and_the_fix(tmp_path):
    with pytest.raises(DataMissing) as err:
        build_data(DataConfig("cifar100", root=str(tmp_path)))
    message = str(err.value)
    assert str(tmp_path / "cifar100") in message and "cifar-100-python/" in message
    assert "kd-bench download cifar100" in message and "--data synthetic" in message and "\n" not in message
    write_cifar10(tmp_path)
    (tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataMissing, match="data_batch_3 is missing"):
        build_data(DataConfig("cifar10", root=str(tmp_path)))


def test_damaged_cifar_file_is_reported(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar10" / "cifar-10-batches-py" / "test_batch").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataMissing, match="test_batch is damaged"):
        build_data(DataConfig("cifar10", root=str(tmp_path), batch_size=4))


class Python2Pickler(pickle._Pickler):
    """Writes what Python 2's cPickle wrote into the published CIFAR batches: protocol 2, every string as
    a byte string (BINSTRING, read back as latin-1 text), numpy's globals under their numpy 1.x names."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        raw = obj.encode("latin-1") if isinstance(obj, str) else obj
        self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[str] = dispatch[bytes] = save_py2_str


def python2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    Python2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"cnumpy._core.", b"cnumpy.core.")


def test_cifar_batches_as_python2_wrote_them_load(tmp_path):
    """The published files are plain dicts of byte strings, lists of ints and one uint8 array, whose only
    globals are numpy's array reconstruction: the restricted unpickler admits exactly these."""
    x_train, y_train, x_test, y_test = write_cifar10(tmp_path)
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    rows = np.split(x_train, 5)
    for i in range(1, 6):
        blob = python2_pickle({"batch_label": f"training batch {i} of 5", "data": rows[i - 1],
                               "labels": y_train[4 * (i - 1):4 * i].tolist(), "filenames": [b"a.png"] * 4})
        (folder / f"data_batch_{i}").write_bytes(blob)
    (folder / "test_batch").write_bytes(python2_pickle({"data": x_test, "labels": y_test.tolist()}))
    globals_named = {arg for op, arg, _ in pickletools.genops(python2_pickle({"data": x_test}))
                     if op.name == "GLOBAL"}
    assert globals_named == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}
    bundle = build_data(DataConfig("cifar10", root=str(tmp_path), batch_size=4, augment="none"))
    assert bundle.n_train == 20 and torch.equal(_served(bundle.test)[1], torch.as_tensor(y_test))


class RunsCode:
    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


@pytest.mark.parametrize("payload", ["os.system", "builtins.eval", "numpy.load", "subprocess.call"])
def test_a_data_file_naming_any_other_global_is_refused_before_it_runs(tmp_path, payload):
    write_cifar10(tmp_path)
    marker = tmp_path / "ran"
    name = payload.rsplit(".", 1)[1]
    call = {"os.system": os.system, "builtins.eval": eval, "numpy.load": np.load, "subprocess.call": subprocess.call}[payload]
    args = {"os.system": (f"touch {marker}",), "builtins.eval": (f"open({str(marker)!r}, 'w')",),
            "numpy.load": (str(marker),), "subprocess.call": (["touch", str(marker)],)}[payload]
    _pickle(tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_2",
            {"data": np.zeros((4, 3072), np.uint8), "labels": [0] * 4, "x": RunsCode(call, *args)})
    with pytest.raises(DataMissing) as err:
        build_data(DataConfig("cifar10", root=str(tmp_path), batch_size=4))
    message = str(err.value)
    assert "data_batch_2 asks to load" in message and name in message and "never holds" in message
    assert "\n" not in message and not marker.exists()


def test_download_goes_through_torchvision(tmp_path, monkeypatch):
    calls = []

    class FakeCIFAR100:
        def __init__(self, root, train, download):
            calls.append((root, train, download))

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", FakeCIFAR100)
    assert download("cifar100", str(tmp_path)) == tmp_path / "cifar100"
    assert calls == [(str(tmp_path / "cifar100"), True, True)]


def test_svhn_reads_mat_files_and_maps_label_10_to_0(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    rng = np.random.default_rng(0)
    folder = tmp_path / "svhn"
    folder.mkdir()
    expected = {}
    for split, n in (("train", 6), ("test", 3)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)       # the .mat layout: H, W, C, N
        y = rng.integers(1, 11, (n, 1)).astype(np.uint8)
        y[0] = 10
        scipy_io.savemat(folder / f"{split}_32x32.mat", {"X": x, "y": y})
        expected[split] = (x, y)
    data = build_data(DataConfig("svhn", root=str(tmp_path), batch_size=2, eval_batch_size=8))
    assert data.augment == "none" and data.n_train == 6
    x, y = _served(data.test)
    raw_x, raw_y = expected["test"]
    assert y.tolist() == (raw_y[:, 0] % 10).tolist() and y[0] == 0
    pixel = (raw_x[5, 9, 2, 1] / 255 - data.mean[2]) / data.std[2]                  # h=5, w=9, c=2, n=1
    assert x[1, 2, 5, 9].item() == pytest.approx(pixel, abs=1e-5)


def test_missing_svhn_names_the_file(tmp_path):
    with pytest.raises(DataMissing, match="SVHN not found under .*svhn .train_32x32.mat is missing.*download svhn"):
        build_data(DataConfig("svhn", root=str(tmp_path)))


def _idx(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 8, array.ndim]) + np.array(array.shape, ">i4").tobytes()
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_mnist_reads_idx_files_as_one_channel(tmp_path):
    rng = np.random.default_rng(0)
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    images = {s: rng.integers(0, 256, (n, 28, 28)) for s, n in (("train", 8), ("t10k", 4))}
    labels = {s: rng.integers(0, 10, len(images[s])) for s in images}
    for s in images:
        _idx(raw / f"{s}-images-idx3-ubyte", images[s])
        _idx(raw / f"{s}-labels-idx1-ubyte", labels[s])
    data = build_data(DataConfig("mnist", root=str(tmp_path), batch_size=4))
    assert data.input_size == (1, 28, 28) and data.mean == (0.1307,) and data.n_train == 8
    x, y = _served(data.test)
    assert x.shape == (4, 1, 28, 28) and y.tolist() == labels["t10k"].tolist()
    assert torch.allclose(x[:, 0], (torch.from_numpy(images["t10k"]).float() / 255 - 0.1307) / 0.3081, atol=1e-5)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x03abc")
    with pytest.raises(DataMissing, match="not a 1-d uint8 IDX file"):
        build_data(DataConfig("mnist", root=str(tmp_path), batch_size=4))


# ---------------------------------------------------------------- image folders

def _jpeg(path, size, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, "JPEG")


def write_imagenet(root):
    for c, wnid in enumerate(("n01440764", "n01443537")):
        for i, size in enumerate(((40, 30), (33, 50), (64, 64))):
            _jpeg(root / "imagenet" / "train" / wnid / f"{wnid}_{i}.JPEG", size, seed=10 * c + i)
        _jpeg(root / "imagenet" / "val" / wnid / f"ILSVRC2012_val_{c}.JPEG", (48, 36), seed=100 + c)


def test_imagenet_folders_yield_224_crops(tmp_path):
    write_imagenet(tmp_path)
    cfg = DataConfig("imagenet", root=str(tmp_path), batch_size=2, eval_batch_size=4, num_workers=0)
    data = build_data(cfg)
    assert (data.num_classes, data.n_train, data.n_test, data.augment) == (2, 6, 2, "imagenet")
    assert len(data.train) == 3 and len(data.test) == 1
    x, y = next(iter(data.train))
    assert x.shape == (2, 3, 224, 224) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert -2.2 < x.min() and x.max() < 2.7                         # normalised with the ImageNet stats
    xt, yt = _served(data.test)
    assert yt.tolist() == [0, 1] and xt.shape == (2, 3, 224, 224)
    # the test transform is Resize(256) + CenterCrop(224) of the file
    img = Image.open(tmp_path / "imagenet/val/n01440764/ILSVRC2012_val_0.JPEG").convert("RGB")
    ref = torchvision.transforms.functional.center_crop(
        torchvision.transforms.functional.resize(img, 256, antialias=True), 224)
    ref = (torchvision.transforms.functional.pil_to_tensor(ref).float() / 255
           - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    assert torch.allclose(xt[0], ref, atol=1e-5)


def test_folder_epochs_are_reproducible(tmp_path):
    write_imagenet(tmp_path)
    cfg = DataConfig("imagenet", root=str(tmp_path), batch_size=3, num_workers=0)
    loader_a, loader_b = build_data(cfg).train, build_data(cfg).train

    def epoch(loader, e):
        loader.set_epoch(e)
        return _served(loader)

    xa, ya = epoch(loader_a, 1)
    xb, yb = epoch(loader_b, 1)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    x2, _ = epoch(loader_a, 2)
    assert not torch.equal(xa, x2)
    assert torch.equal(epoch(loader_a, 1)[0], xa)


def test_folder_batches_do_not_depend_on_workers(tmp_path):
    write_imagenet(tmp_path)
    served = [_served(build_data(DataConfig("imagenet", root=str(tmp_path), batch_size=3, num_workers=w)).train)
              for w in (0, 2)]
    assert torch.equal(served[0][0], served[1][0]) and torch.equal(served[0][1], served[1][1])


def test_folder_ranks_share_the_epoch(tmp_path):
    write_imagenet(tmp_path)
    shards = [build_data(DataConfig("imagenet", root=str(tmp_path), batch_size=1, num_workers=0),
                         rank=r, world_size=2) for r in range(2)]
    keys = [key for data in shards for batch in data.train.batches() for key in batch]
    assert sorted(i for i, _ in keys) == list(range(6)) and all(len(data.train) == 3 for data in shards)


def test_missing_imagenet_names_the_path(tmp_path):
    with pytest.raises(DataMissing) as err:
        build_data(DataConfig("imagenet", root=str(tmp_path)))
    assert str(tmp_path / "imagenet") in str(err.value) and "no train/" in str(err.value)
    (tmp_path / "imagenet" / "train").mkdir(parents=True)
    (tmp_path / "imagenet" / "val").mkdir()
    with pytest.raises(DataMissing, match="holds no images"):
        build_data(DataConfig("imagenet", root=str(tmp_path)))


def write_cub(root):
    base = root / "cub200" / "CUB_200_2011"
    files = ["001.Black_footed_Albatross/a.jpg", "001.Black_footed_Albatross/b.jpg",
             "002.Laysan_Albatross/c.jpg", "003.Sooty_Albatross/d.jpg", "003.Sooty_Albatross/e.jpg"]
    labels, train = [1, 1, 2, 3, 3], [1, 0, 1, 1, 0]
    for k, rel in enumerate(files):
        _jpeg(base / "images" / rel, (50, 40), seed=k)
    (base / "images.txt").write_text("".join(f"{k + 1} {rel}\n" for k, rel in enumerate(files)))
    (base / "image_class_labels.txt").write_text("".join(f"{k + 1} {c}\n" for k, c in enumerate(labels)))
    (base / "train_test_split.txt").write_text("".join(f"{k + 1} {t}\n" for k, t in enumerate(train)))


def test_cub200_uses_the_official_split(tmp_path):
    write_cub(tmp_path)
    data = build_data(DataConfig("cub200", root=str(tmp_path), batch_size=3, num_workers=0))
    assert (data.num_classes, data.n_train, data.n_test) == (3, 3, 2)
    x, y = next(iter(data.train))
    assert x.shape == (3, 3, 224, 224) and sorted(y.tolist()) == [0, 1, 2]
    _, yt = _served(data.test)
    assert yt.tolist() == [0, 2]
    (tmp_path / "cub200" / "CUB_200_2011" / "images" / "002.Laysan_Albatross" / "c.jpg").unlink()
    with pytest.raises(DataMissing, match="c.jpg is missing"):
        build_data(DataConfig("cub200", root=str(tmp_path), num_workers=0))
    (tmp_path / "cub200" / "CUB_200_2011" / "train_test_split.txt").write_text("1 1\n2 0\n")
    with pytest.raises(DataMissing, match="different image ids"):
        build_data(DataConfig("cub200", root=str(tmp_path), num_workers=0))


def test_missing_cub_names_the_path(tmp_path):
    with pytest.raises(DataMissing) as err:
        build_data(DataConfig("cub200", root=str(tmp_path)))
    assert str(tmp_path / "cub200" / "CUB_200_2011") in str(err.value) and "images.txt" in str(err.value)


def test_random_resized_crop_box_stays_inside_and_is_seeded():
    for k in range(50):
        top, left, h, w = random_resized_crop_box(30, 80, torch.Generator().manual_seed(k))
        assert 0 <= top and top + h <= 30 and 0 <= left and left + w <= 80 and h > 0 and w > 0
    boxes = [random_resized_crop_box(30, 80, torch.Generator().manual_seed(7)) for _ in range(2)]
    assert boxes[0] == boxes[1]
    # an extreme aspect ratio falls back to the centred crop with the ratio clamped to 4/3
    top, left, h, w = random_resized_crop_box(10, 1000, torch.Generator().manual_seed(0), scale=(0.99, 1.0))
    assert (top, h, w) == (0, 10, 13) and left == (1000 - 13) // 2


def test_folder_loader_honours_a_non_square_input_size(tmp_path):
    from kd_methods.data import FolderLoader
    write_imagenet(tmp_path)
    samples = [(str(p), 0) for p in sorted((tmp_path / "imagenet" / "train").rglob("*.JPEG"))]
    for train in (True, False):
        loader = FolderLoader(samples, batch_size=2, mean=(0.5,) * 3, std=(0.5,) * 3, train=train,
                              num_workers=0, size=(64, 32))
        assert next(iter(loader))[0].shape == (2, 3, 64, 32)
