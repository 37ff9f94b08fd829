"""Data layer: synthetic sets, device-resident loaders, augmentation, sharding, preprocessing, config errors.
(Reading real on-disk formats is tested in test_data_files.py.)"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kd_methods.data import (DataConfig, TensorLoader, ZCA, build_data, crop_flip, download, gcn_zca,
                             global_contrast_normalize, make_synthetic, stratified_first)
from kd_methods.errors import ConfigError


# ---------------------------------------------------------------- synthetic data

def test_synthetic_is_deterministic_and_prefix_stable():
    x1, y1 = make_synthetic(10, 5, 300, "train", seed=3)
    make_synthetic.cache_clear()
    x2, y2 = make_synthetic(10, 5, 300, "train", seed=3)
    assert x1.shape == (300, 3, 32, 32) and x1.dtype == np.uint8 and y1.dtype == np.int64
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    small, _ = make_synthetic(10, 5, 40, "train", seed=3)
    assert np.array_equal(small, x1[:40])                       # a smaller set is a prefix of a larger one
    assert np.array_equal(y1, np.arange(300) % 10)               # labels cycle: every prefix is stratified
    other, _ = make_synthetic(10, 5, 300, "train", seed=4)
    test, _ = make_synthetic(10, 5, 300, "test", seed=3)
    assert not np.array_equal(other, x1) and not np.array_equal(test, x1)


def _sq_dist(a, b):
    return (a ** 2).sum(1)[:, None] - 2 * a @ b.T + (b ** 2).sum(1)[None, :]


@pytest.mark.parametrize("classes,groups,min_acc", [(100, 20, 0.15), (10, 5, 0.5)])
def test_synthetic_has_confusable_groups(classes, groups, min_acc):
    """Nearest-class-mean classification: far above chance, groups almost always right, and the errors
    stay inside the true group (the secondary classes a teacher should rank high)."""
    x_train, y_train = make_synthetic(classes, groups, 2000, "train", seed=0)
    x_test, y_test = make_synthetic(classes, groups, 500, "test", seed=0)
    f_train = x_train.reshape(len(x_train), -1).astype(np.float32) / 255
    f_test = x_test.reshape(len(x_test), -1).astype(np.float32) / 255
    means = np.stack([f_train[y_train == k].mean(0) for k in range(classes)])
    pred = _sq_dist(f_test, means).argmin(1)
    per_group = classes // groups
    wrong = pred != y_test
    assert (pred == y_test).mean() > min_acc > 1 / classes
    assert (pred // per_group == y_test // per_group).mean() > 0.95
    assert (pred[wrong] // per_group == y_test[wrong] // per_group).mean() > 0.9

    sample = f_test[:300]
    group = y_test[:300] // per_group
    dist = _sq_dist(sample, sample)
    same = (group[:, None] == group[None]) & ~np.eye(300, dtype=bool)
    assert dist[same].mean() < 0.6 * dist[group[:, None] != group[None]].mean()


def test_synthetic_bundle_shapes_and_defaults():
    data = build_data(DataConfig("synthetic100", train_subset=500, test_subset=130, batch_size=64,
                                 eval_batch_size=50))
    assert (data.num_classes, data.input_size, data.n_train, data.n_test) == (100, (3, 32, 32), 500, 130)
    assert data.augment == "crop_flip"
    assert len(data.train) == 500 // 64 and len(data.test) == 3           # train drops, test keeps
    batches = list(data.test)
    assert [len(y) for _, y in batches] == [50, 50, 30]
    x, y = batches[0]
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape == (50, 3, 32, 32)
    assert torch.equal(y, torch.arange(50) % 100)                           # test split in file order
    mnist = build_data(DataConfig("synthetic_mnist", train_subset=64, test_subset=10, batch_size=32))
    assert mnist.input_size == (1, 28, 28) and next(iter(mnist.train))[0].shape == (32, 1, 28, 28)


def test_synthetic_normalisation_uses_train_statistics():
    data = build_data(DataConfig("synthetic10", train_subset=400, test_subset=10, batch_size=400,
                                 augment="none"))
    x, _ = next(iter(data.train))
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(x.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)
    raw, _ = make_synthetic(10, 5, 400, "train", seed=0)
    manual = raw.astype(np.float64).transpose(1, 0, 2, 3).reshape(3, -1) / 255
    assert np.allclose(data.mean, manual.mean(1)) and np.allclose(data.std, manual.std(1))


def test_synthetic_imagenet_shapes():
    data = build_data(DataConfig("synthetic_imagenet", train_subset=8, test_subset=4, batch_size=4))
    x, y = next(iter(data.train))
    assert data.num_classes == 1000 and x.shape == (4, 3, 224, 224) and int(y.max()) < 1000


# ---------------------------------------------------------------- augmentation

def _reference_crop_flip(img, dy, dx, flip, pad, mode):
    padded = F.pad(img[None].float(), (pad,) * 4, mode="constant" if mode == "zeros" else "reflect")[0]
    crop = padded[:, dy:dy + img.shape[1], dx:dx + img.shape[2]]
    return crop.flip(-1) if flip else crop


@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_crop_flip_matches_per_image_reference(mode):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 10, 12), generator=g, dtype=torch.uint8)
    offsets = torch.tensor([[0, 0], [8, 8], [4, 4], [0, 8], [8, 0], [3, 6]])
    flips = torch.tensor([False, True, False, True, True, False])
    out = crop_flip(images, offsets, flips, pad=4, mode=mode)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    for i in range(6):
        ref = _reference_crop_flip(images[i], *offsets[i].tolist(), bool(flips[i]), 4, mode)
        assert torch.equal(out[i].float(), ref), i
    assert torch.equal(crop_flip(images, torch.full((6, 2), 4), torch.zeros(6, dtype=torch.bool)), images)


def test_reflection_and_zero_padding_differ_only_at_borders():
    images = torch.randint(1, 256, (1, 3, 8, 8), dtype=torch.uint8)  # no zero pixels
    corner, no_flip = torch.tensor([[0, 0]]), torch.tensor([False])
    zeros = crop_flip(images, corner, no_flip, 4, "zeros")[0]
    reflect = crop_flip(images, corner, no_flip, 4, "reflect")[0]
    assert (zeros[:, :4] == 0).all() and (zeros[:, :, :4] == 0).all()
    assert torch.equal(reflect[:, :4, 4:], images[0, :, [4, 3, 2, 1], :4])  # rows mirrored
    assert torch.equal(zeros[:, 4:, 4:], reflect[:, 4:, 4:])               # the interior agrees
    assert (reflect[:, :4] != 0).all()


def _ramp_loader(n=2000, augment="crop_flip", **kw):
    """Image i has column ramp values 10..41 (row-constant) and target i: crop and flip are readable."""
    images = (torch.arange(32) + 10).to(torch.uint8).expand(n, 1, 32, 32).contiguous()
    kw = {"batch_size": 100, "mean": (0.0,), "std": (1 / 255,), "train": True, "augment": augment} | kw
    return TensorLoader(images, torch.arange(n), **kw)


def test_flip_probability_and_crop_offsets_are_uniform():
    flips, shifts = [], []
    for x, _ in _ramp_loader():
        row = x[:, 0, 16]                                         # a middle row, padded columns are 0
        interior = row[:, 4:28]                                   # never touched by the padding
        flipped = interior[:, 1] < interior[:, 0]
        flips.append(flipped)
        ramp = torch.where(flipped[:, None], interior.flip(-1), interior)
        shifts.append(ramp[:, 0] - 14)                            # dx - pad, in [-4, 4]
    flips, shifts = torch.cat(flips), torch.cat(shifts)
    assert 0.45 < flips.float().mean() < 0.55
    counts = torch.bincount((shifts + 4).long(), minlength=9)
    assert len(counts) == 9 and counts.min() > 2000 / 9 * 0.7


def test_none_augment_leaves_images_unchanged():
    images = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8)
    loader = TensorLoader(images, torch.arange(50), batch_size=10, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3),
                          train=True, augment="none")
    mean, std = torch.tensor([0.5, 0.4, 0.3])[:, None, None], torch.tensor([0.2, 0.25, 0.3])[:, None, None]
    seen = []
    for x, idx in loader:
        assert torch.allclose(x, (images[idx].float() / 255 - mean) / std, atol=1e-5)
        seen.append(idx)
    seen = torch.cat(seen)
    assert sorted(seen.tolist()) == list(range(50)) and seen.tolist() != list(range(50))  # shuffled


# ---------------------------------------------------------------- epochs and ranks

def _epoch(loader, epoch):
    loader.set_epoch(epoch)
    return [(x.clone(), y.clone()) for x, y in loader]


def test_set_epoch_reproduces_batches():
    a, b = _ramp_loader(n=300), _ramp_loader(n=300)
    first = _epoch(a, 3)
    _epoch(a, 4)
    for again in (_epoch(a, 3), _epoch(b, 3)):                   # same loader later, or a fresh one
        assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(first, again))
    other = _epoch(a, 4)
    assert not torch.equal(torch.cat([y for _, y in first]), torch.cat([y for _, y in other]))
    same_order = _ramp_loader(n=300, augment="none")             # the order does not depend on augmentation
    assert torch.equal(torch.cat([y for _, y in first]), torch.cat([y for _, y in _epoch(same_order, 3)]))
    seeded = _ramp_loader(n=300, seed=1)
    assert not torch.equal(torch.cat([y for _, y in first]), torch.cat([y for _, y in _epoch(seeded, 3)]))


def test_ranks_take_disjoint_shares_of_each_global_batch():
    n, batch, world = 230, 10, 3
    single = _epoch(_ramp_loader(n=n, batch_size=batch * world), 2)
    shards = [_epoch(_ramp_loader(n=n, batch_size=batch, rank=r, world_size=world), 2) for r in range(world)]
    assert all(len(s) == n // (batch * world) == len(single) for s in shards)
    for g, (x, y) in enumerate(single):                          # same permutation and augmentation
        assert torch.equal(torch.cat([s[g][1] for s in shards]), y)
        assert torch.equal(torch.cat([s[g][0] for s in shards]), x)
    seen = torch.cat([y for s in shards for _, y in s])
    assert len(set(seen.tolist())) == len(seen) == (n // (batch * world)) * batch * world


def test_test_split_shards_cover_everything_once():
    images = torch.zeros(23, 1, 4, 4, dtype=torch.uint8)
    shards = [TensorLoader(images, torch.arange(23), batch_size=3, mean=(0.0,), std=(1.0,), train=False,
                           rank=r, world_size=4) for r in range(4)]
    covered = torch.cat([y for loader in shards for _, y in loader])
    assert covered.tolist() == list(range(23))
    assert [len(loader) for loader in shards] == [2, 2, 2, 2]   # blocks of 6, 6, 6, 5


# ---------------------------------------------------------------- preprocessing and subsets

def test_gcn_and_zca_whiten_a_small_set():
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(12, 12, generator=g)
    x = (torch.randn(4000, 12, generator=g) @ mix + 3).reshape(4000, 3, 2, 2)
    zca = ZCA.fit(x, bias=1e-8)
    white = zca(x).reshape(4000, 12).double()
    assert torch.allclose(torch.cov(white.T, correction=0), torch.eye(12, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(zca.matrix, zca.matrix.T)
    eig = torch.linalg.eigvalsh(torch.cov(x.reshape(4000, 12).T.double(), correction=0))
    shrunk = torch.linalg.eigvalsh(torch.cov(ZCA.fit(x, bias=0.1)(x).reshape(4000, 12).T.double(),
                                             correction=0))
    assert torch.allclose(shrunk, eig / (eig + 0.1), atol=1e-4)   # the bias shrinks small directions
    gcn = global_contrast_normalize(x, scale=55.0).reshape(4000, 12)
    assert torch.allclose(gcn.mean(1), torch.zeros(4000, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(gcn.norm(dim=1), torch.full((4000,), 55.0, dtype=torch.float64))


def test_zca_bundle_serves_whitened_floats():
    cfg = DataConfig("synthetic_mnist", preprocess="zca", augment="none", train_subset=100, test_subset=20,
                     batch_size=100)
    data = build_data(cfg)
    assert data.mean == (0.0,) and data.std == (1.0,)
    raw_train, _ = make_synthetic(10, 5, 100, "train", seed=0, channels=1, size=28)
    raw_test, _ = make_synthetic(10, 5, 20, "test", seed=0, channels=1, size=28)
    _, white_test = gcn_zca(torch.from_numpy(raw_train.copy()), torch.from_numpy(raw_test.copy()))
    served = torch.cat([x for x, _ in data.test])               # in order, not augmented, not rescaled
    assert served.dtype == torch.float32 and torch.allclose(served, white_test, atol=1e-5)
    cropped = build_data(DataConfig("synthetic_mnist", preprocess="zca", augment="crop_flip",
                                    train_subset=100, test_subset=20, batch_size=50))
    assert next(iter(cropped.train))[0].dtype == torch.float32


def test_stratified_first_subset():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    assert stratified_first(labels, 4).tolist() == [0, 1, 3, 5]     # firsts of 0, 1, 2, then second 0
    assert stratified_first(labels, 8).tolist() == list(range(8))
    sorted_labels = np.repeat(np.arange(5), 40)                   # a file sorted by class
    picked = stratified_first(sorted_labels, 25)
    assert np.bincount(sorted_labels[picked], minlength=5).tolist() == [5] * 5
    assert picked[:5].tolist() == [0, 1, 2, 3, 4]                 # the first images of class 0


def test_train_subset_is_class_balanced_for_tensor_sets():
    data = build_data(DataConfig("synthetic10", train_subset=30, test_subset=10, batch_size=30))
    _, y = next(iter(data.train))
    assert torch.bincount(y, minlength=10).tolist() == [3] * 10


# ---------------------------------------------------------------- errors a user can make

@pytest.mark.parametrize("cfg,words", [
    (DataConfig("cifar1000"), ["unknown dataset", "cifar100"]),
    (DataConfig("synthetic10", augment="imagenet"), ["augment 'imagenet'", "crop_flip"]),
    (DataConfig("synthetic10", preprocess="pca"), ["preprocess", "zca"]),
    (DataConfig("imagenet", preprocess="zca"), ["zca", "imagenet"]),
    (DataConfig("synthetic10", batch_size=0), ["batch_size"]),
    (DataConfig("synthetic10", train_subset=50, batch_size=64), ["fewer than one batch"]),
    (DataConfig("mnist", train_subset=-1), ["train_subset"]),
])
def test_config_errors_are_one_line(cfg, words):
    with pytest.raises(ConfigError) as err:
        build_data(cfg)
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_download_of_non_downloadable_sets():
    assert download("synthetic100") is None
    with pytest.raises(ConfigError, match="image-net.org"):
        download("imagenet")


def test_bad_rank_is_rejected():
    with pytest.raises(ConfigError, match="rank"):
        build_data(DataConfig("synthetic10", train_subset=64, batch_size=8), rank=2, world_size=2)


def test_loader_runs_on_a_gpu_like_cpu_when_available():
    """CPU and CUDA draw the same order and augmentation (random numbers come from CPU generators)."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    cfg = DataConfig("synthetic10", train_subset=256, test_subset=10, batch_size=64)
    cpu, gpu = build_data(cfg, "cpu"), build_data(cfg, "cuda")
    for (xc, yc), (xg, yg) in zip(cpu.train, gpu.train):
        assert xg.is_cuda and torch.equal(yc, yg.cpu()) and torch.allclose(xc, xg.cpu(), atol=1e-6)
    assert math.isclose(len(cpu.train), len(gpu.train))


def test_zca_with_fewer_images_than_dimensions_matches_the_eigendecomposition():
    x = torch.randn(20, 3, 3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    flat = x.reshape(20, 27)
    centred = flat - flat.mean(0)
    eigvals, eigvecs = torch.linalg.eigh(centred.T @ centred / 20)
    expected = (eigvecs * (eigvals.clamp_min(0) + 0.1).rsqrt()) @ eigvecs.T
    assert torch.allclose(ZCA.fit(x, bias=0.1).matrix, expected, atol=1e-8)
