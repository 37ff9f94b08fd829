"""Every fast path computes what the plain fp32 eager path computes, on a fixed batch.

- several networks: `ParallelForward` (torch.func vmap over stacked weights, CUDA streams, auto) and
  `vmap_forward_train` == a Python loop over the networks (outputs, features, gradients, BN statistics);
- channels_last == contiguous NCHW; bf16 autocast logits close to fp32 (stated tolerance);
- the on-device batched augmentation == torchvision's per-image transforms of the textbook loop;
- (CUDA only) an engine training step makes no host synchronisation.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kd_methods.engine import multi
from kd_methods.engine.multi import ParallelForward, make_template, same_architecture, vmap_forward_train
from kd_methods.models import FeatureTap, create_model

CUDA = torch.cuda.is_available()


def nets(name="cifar_resnet8", n=3, seed=0, train=False):
    torch.manual_seed(seed)
    out = [create_model(name, num_classes=10) for _ in range(n)]
    for m in out:
        # Non-trivial BN statistics, different per network, so stacking mistakes would show.
        for bn in m.modules():
            if isinstance(bn, torch.nn.BatchNorm2d):
                bn.running_mean.normal_(0, 0.1)
                bn.running_var.uniform_(0.5, 1.5)
        m.train(train)
        for p in m.parameters():
            p.requires_grad_(train)
    return out


def batch(n=4, seed=1):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def assert_tree_close(a, b, atol=1e-5, rtol=1e-5):
    if isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_tree_close(a[k], b[k], atol, rtol)
    else:
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_tree_close(x, y, atol, rtol)


# -- several frozen networks ---------------------------------------------------------------------------
def test_vmap_teachers_equal_loop_logits_and_features():
    teachers = nets()
    taps = [FeatureTap(t, {"s2": "layer2", "final": "layer3"}) for t in teachers]
    pf = ParallelForward(taps, strategy="loop")
    x = batch()
    loop, vm = pf.run("loop", x), pf.run("vmap", x)
    assert len(vm) == 3 and set(vm[0][1]) == {"s2", "final"}
    assert_tree_close(vm, loop)
    # and the loop is what each network gives on its own
    for t, (logits, _) in zip(teachers, loop):
        torch.testing.assert_close(logits, t(x), atol=0, rtol=0)
    # the three teachers differ, so a stacking mix-up cannot pass
    assert not torch.allclose(loop[0][0], loop[1][0])


def test_vmap_plain_modules_under_cpu_autocast_match_loop():
    teachers = nets()
    pf = ParallelForward(teachers, strategy="vmap")
    x = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        vm, loop = pf(x), pf.run("loop", x)
    assert vm[0].dtype == loop[0].dtype == torch.bfloat16
    assert_tree_close([v.float() for v in vm], [v.float() for v in loop], atol=2e-2, rtol=2e-2)


def test_auto_on_a_cpu_takes_the_loop_without_measuring():
    pf = ParallelForward(nets())
    x = batch()
    assert_tree_close(pf(x), pf.run("loop", x))
    assert pf.candidates(x.device) == ["loop"] and pf.available(x.device) == ["loop", "vmap"]
    assert list(pf.choices.values()) == ["loop"] and pf.timings == {}


def test_auto_measures_once_per_shape_and_networks_in_the_process(monkeypatch):
    # As on CUDA: every available strategy is a candidate (the CPU's loop-only rule set aside).
    monkeypatch.setattr(ParallelForward, "candidates", ParallelForward.available)
    monkeypatch.setattr(multi, "_MEASURED", {})
    pf = ParallelForward(nets())
    x = batch()
    out = pf(x)
    assert_tree_close(out, pf.run("loop", x))
    (key, choice), = pf.choices.items()
    assert choice in ("loop", "vmap")
    assert set(pf.timings[key]) == {"loop", "vmap"} and all(v > 0 for v in pf.timings[key].values())
    pf(x)
    assert len(pf.choices) == 1 and len(pf.timings) == 1  # same shape: no new measurement
    pf(batch(n=2))
    assert len(pf.choices) == 2 and len(pf.timings) == 2
    # The next run's networks (same architectures, other weights) on the same input: the choice is reused.
    again = ParallelForward(nets(seed=7))
    again(x)
    assert again.choices == {key: choice} and again.timings == {}
    other = ParallelForward(nets("cifar_resnet14"))  # other networks are measured
    other(x)
    assert len(other.timings) == 1


def test_vmap_restacks_when_a_teacher_is_reloaded():
    teachers = nets()
    pf = ParallelForward(teachers, strategy="vmap")
    x = batch()
    before = pf(x)
    new = nets(seed=5, n=1)[0]
    teachers[1].load_state_dict(new.state_dict())  # in place: the stacked copy is stale now
    after = pf(x)
    torch.testing.assert_close(after[1], new(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(after[0], before[0], atol=0, rtol=0)


def test_different_architectures_fall_back_to_the_loop():
    mixed = nets("cifar_resnet8", n=1) + nets("cifar_resnet14", n=1)
    assert not same_architecture(mixed)
    with pytest.raises(ValueError, match="one architecture"):
        ParallelForward(mixed, strategy="vmap")
    pf = ParallelForward(mixed)
    x = batch()
    out = pf(x)
    assert pf.available(x.device) == ["loop"]
    assert_tree_close(out, [m(x) for m in mixed])
    with pytest.raises(ValueError, match="unknown strategy"):
        ParallelForward(mixed, strategy="threads")


@pytest.mark.skipif(not CUDA, reason="CUDA streams need a CUDA device")
def test_cuda_streams_equal_loop():
    teachers = [t.cuda() for t in nets()]
    taps = [FeatureTap(t, {"final": "layer3"}) for t in teachers]
    pf = ParallelForward(taps, strategy="streams")
    x = batch().cuda()
    assert_tree_close(pf(x), pf.run("loop", x))


# -- several trainable networks (DML peers) -----------------------------------------------------------
def test_vmap_forward_train_equals_loop_outputs_gradients_and_bn_statistics():
    peers = nets(train=True)
    twins = copy.deepcopy(peers)
    x, y = batch(), torch.tensor([0, 1, 2, 3])

    def loss(outs):  # a DML-like sum in which the networks interact
        return sum(F.cross_entropy(o, y) + 0.5 * F.mse_loss(o, outs[(i + 1) % 3].detach())
                   for i, o in enumerate(outs))

    outs = vmap_forward_train(peers, x, make_template(peers[0]))
    ref = [m(x) for m in twins]
    assert_tree_close(outs, ref)
    loss(outs).backward()
    loss(ref).backward()
    for m, t in zip(peers, twins):
        for (name, p), q in zip(m.named_parameters(), t.parameters()):
            assert p.grad is not None, name
            torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)
        for (name, b), c in zip(m.named_buffers(), t.buffers()):
            torch.testing.assert_close(b, c, atol=1e-6, rtol=1e-5, msg=name)  # running stats written back
    assert int(peers[2].bn1.num_batches_tracked) == 1


# -- layout and precision ------------------------------------------------------------------------------
def test_channels_last_equals_contiguous_forward_and_backward():
    (net,) = nets(n=1, train=True)
    twin = copy.deepcopy(net).to(memory_format=torch.channels_last)
    x, y = batch(), torch.tensor([0, 1, 2, 3])
    a, b = net(x), twin(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    F.cross_entropy(a, y).backward()
    F.cross_entropy(b, y).backward()
    for p, q in zip(net.parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad.contiguous(), atol=1e-5, rtol=1e-4)


def test_bf16_autocast_logits_close_to_fp32_on_cpu():
    """Tolerance: bf16 keeps 8 significand bits (relative rounding 2^-9); through the 8 layers of
    ResNet-8 the logits may drift by a few percent of their scale: |bf16 - fp32| <= 0.05 * max|fp32| + 0.02."""
    (net,) = nets(n=1)
    x = batch(n=16)
    ref = net(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = net(x)
    assert low.dtype == torch.bfloat16
    err = (low.float() - ref).abs().max().item()
    assert err <= 0.05 * ref.abs().max().item() + 0.02, err
    assert err > 0  # bf16 really ran


# -- data pipeline ----------------------------------------------------------------------------------------
def test_device_augmentation_equals_torchvision_per_image_transforms():
    import torchvision.transforms.functional as TF
    from PIL import Image

    from kd_methods.data import TensorLoader, crop_flip

    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (6, 3, 32, 32), dtype=np.uint8))
    offsets = torch.tensor([[0, 0], [8, 8], [4, 4], [1, 7], [8, 0], [3, 5]])
    flips = torch.tensor([False, True, False, True, True, False])
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    loader = TensorLoader(images, torch.zeros(6, dtype=torch.int64), batch_size=6, mean=mean, std=std,
                          train=True, augment="crop_flip")
    fast = loader.normalize(crop_flip(images, offsets, flips))
    for i in range(6):  # what RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize do
        img = TF.pad(Image.fromarray(images[i].permute(1, 2, 0).numpy()), 4)
        img = TF.crop(img, int(offsets[i, 0]), int(offsets[i, 1]), 32, 32)
        if flips[i]:
            img = TF.hflip(img)
        ref = TF.normalize(TF.to_tensor(img), mean, std)
        torch.testing.assert_close(fast[i], ref, atol=1e-5, rtol=1e-5)


# -- no host sync in a step (CUDA) ------------------------------------------------------------------------
@pytest.mark.skipif(not CUDA, reason="host synchronisation is a CUDA matter")
def test_engine_step_makes_no_host_sync():
    from kd_methods.bench import EngineStep, Settings
    from kd_methods.data import DataConfig, build_data
    from kd_methods.methods import build_method

    settings = Settings.for_device(torch.device("cuda"), quick=True)
    data = build_data(DataConfig(name="synthetic10", batch_size=8, train_subset=64, test_subset=8),
                      settings.device)
    kd = build_method("kd", create_model("cifar_resnet8", 10), [create_model("cifar_resnet14", 10)], 10)
    step = EngineStep(kd, None, data.train, settings)
    step()  # first batch of the epoch: the epoch's random draws are moved to the device here
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
        step()
    finally:
        torch.cuda.set_sync_debug_mode("default")


# -- the methods use it ---------------------------------------------------------------------------------
def test_multi_teacher_methods_get_each_teachers_outputs():
    from kd_methods.methods import build_method

    teachers = nets(n=3)
    x = batch()
    kd = build_method("kd", create_model("cifar_resnet8", 10), teachers, 10)
    assert_tree_close(kd.teacher_logits(x), [t(x) for t in teachers])
    feed = build_method("feed", create_model("cifar_resnet8", 10), teachers, 10)
    out = feed.teacher_forwards(x)
    for t, (logits, feats) in zip(teachers, out):
        assert_tree_close(logits, t(x))
        assert_tree_close(feats["final"], t.forward_features(x))
    assert not out[0][0].is_inference()  # constants usable in a loss
    (pf,) = feed._parallel.values()
    assert set(pf.choices.values()) <= {"loop", "vmap"}


def test_deterministic_runs_keep_the_loop():
    from kd_methods.methods import build_method

    kd = build_method("kd", create_model("cifar_resnet8", 10), nets(n=2), 10)
    torch.use_deterministic_algorithms(True)
    try:
        kd.teacher_logits(batch())
    finally:
        torch.use_deterministic_algorithms(False)
    (pf,) = kd._parallel.values()
    assert pf.strategy == "loop"
