"""Feature taps by forward hooks: shapes, ':in' captures, gradients, hook hygiene and errors."""
import gc
import weakref

import pytest
import timm
import torch
import torchvision
from torch import nn

from kd_methods.errors import ConfigError
from kd_methods.models import FeatureTap, create_model, feature_shapes, stage_points


@pytest.fixture(scope="module")
def resnet20():
    return create_model("cifar_resnet20", 10).eval()


@pytest.fixture(scope="module")
def timm_resnet34():
    return timm.create_model("resnet34", num_classes=10).eval()


def x32(n=2):
    return torch.randn(n, 3, 32, 32)


def tapped(model, points, x):
    with FeatureTap(model, points) as tap:
        return tap(x)


def shapes(features):
    return {k: tuple(v.shape) for k, v in features.items()}


# --- shapes of the standard points -------------------------------------------------------------------

def test_cifar_resnet_stage_shapes(resnet20):
    _, feats = tapped(resnet20, stage_points(resnet20), x32())
    assert shapes(feats) == {"stem": (2, 16, 32, 32), "stage1": (2, 16, 32, 32), "stage2": (2, 32, 16, 16),
                             "stage3": (2, 64, 8, 8), "final": (2, 64, 8, 8)}


def test_wrn_stage_shapes_and_final_is_after_the_last_bn_relu():
    model = create_model("cifar_wrn_16_2", 10).eval()
    points = stage_points(model)
    assert points["final"] == "relu"
    _, feats = tapped(model, points, x32())
    assert shapes(feats) == {"stem": (2, 16, 32, 32), "stage1": (2, 32, 32, 32), "stage2": (2, 64, 16, 16),
                             "stage3": (2, 128, 8, 8), "final": (2, 128, 8, 8)}
    torch.testing.assert_close(feats["final"], torch.relu(model.bn(feats["stage3"])))
    assert feats["stage3"].min() < 0  # a pre-activation block sum, not yet through BN-ReLU
    assert stage_points(model, pre_activation=True) == points


def test_timm_resnet34_recognised_by_structure(timm_resnet34):
    points = stage_points(timm_resnet34)
    assert points == {"stem": "layer1:in", "stage1": "layer1", "stage2": "layer2", "stage3": "layer3",
                      "stage4": "layer4", "final": "layer4"}
    _, feats = tapped(timm_resnet34, points, torch.randn(2, 3, 64, 64))
    assert shapes(feats) == {"stem": (2, 64, 16, 16), "stage1": (2, 64, 16, 16), "stage2": (2, 128, 8, 8),
                             "stage3": (2, 256, 4, 4), "stage4": (2, 512, 2, 2), "final": (2, 512, 2, 2)}


def test_torchvision_resnet18_recognised_by_structure():
    model = torchvision.models.resnet18(num_classes=10).eval()
    _, feats = tapped(model, stage_points(model), torch.randn(2, 3, 64, 64))
    assert [tuple(feats[f"stage{i}"].shape[1:]) for i in range(1, 5)] == [(64, 16, 16), (128, 8, 8),
                                                                         (256, 4, 4), (512, 2, 2)]
    with pytest.raises(ConfigError, match="in-place ReLU"):
        stage_points(model, pre_activation=True)


def test_wrapped_models_get_prefixed_points():
    model = create_model("cifar_resnet8", 10).eval()
    wrapped = nn.DataParallel(model)  # without GPUs it simply calls the wrapped model
    points = stage_points(wrapped)
    assert points["stage2"] == "module.layer2" and points["stem"] == "module.layer1:in"
    _, feats = tapped(wrapped, points, x32())
    assert feats["stage2"].shape == (2, 32, 16, 16)


def test_feature_shapes_for_fitnets_hint_pair():
    student, teacher = create_model("fitnet4", 10), create_model("fitnets_maxout_teacher", 10)
    assert stage_points(student)["stage2"] == "features.conv11"
    assert feature_shapes(student, {"guided": "features.conv11"}) == {"guided": torch.Size([80, 8, 8])}
    assert feature_shapes(teacher, stage_points(teacher))["stage2"] == torch.Size([192, 7, 7])
    with pytest.raises(ConfigError, match="no pre-activation"):
        stage_points(student, pre_activation=True)


def test_feature_shapes_is_a_side_effect_free_dry_run(resnet20):
    model = create_model("cifar_resnet8", 10)
    model.train()
    model.layer1[0].bn1.eval()  # a per-module mode that must survive
    before = {k: v.clone() for k, v in model.state_dict().items()}
    got = feature_shapes(model, stage_points(model), input_size=(3, 16, 16))
    assert got["stage3"] == torch.Size([64, 4, 4])
    assert model.training and not model.layer1[0].bn1.training and model.layer2[0].bn1.training
    for k, v in model.state_dict().items():  # eval mode: BN running statistics untouched
        torch.testing.assert_close(v, before[k])
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


# --- ':in' captures and pre-activation points --------------------------------------------------------

def test_in_suffix_captures_the_input_before_the_final_relu(resnet20):
    points = stage_points(resnet20, pre_activation=True)
    assert points["stage3"] == "layer3.2.relu_out:in" and points["final"] == "layer3"
    _, feats = tapped(resnet20, {**points, "post": "layer3"}, x32())
    assert feats["stage3"].min() < 0
    torch.testing.assert_close(torch.relu(feats["stage3"]), feats["post"])


def test_in_capture_of_an_inplace_relu_is_copied_before_it_runs():
    # timm zero-initialises each block's last BN, which would make every block sum non-negative
    model = timm.create_model("resnet18", num_classes=10, zero_init_last=False).eval()
    points = stage_points(model, pre_activation=True)
    assert points["stage4"] == "layer4.1.act2:in" and model.layer4[1].act2.inplace
    _, feats = tapped(model, {"pre": points["stage4"], "post": "layer4"}, torch.randn(2, 3, 64, 64))
    assert feats["pre"].min() < 0
    torch.testing.assert_close(torch.relu(feats["pre"]), feats["post"])


def test_negative_indices_resolve_to_explicit_paths(resnet20):
    tap = FeatureTap(resnet20, {"a": "layer2.-1", "b": "layer2.0.conv1:in"})
    assert tap.points == {"a": "layer2.2", "b": "layer2.0.conv1:in"}
    tap.remove()


# --- the tap does not disturb the model ---------------------------------------------------------------

def test_taps_do_not_change_the_output(resnet20):
    x = x32()
    with torch.no_grad():
        plain = resnet20(x)
        out, _ = tapped(resnet20, stage_points(resnet20, pre_activation=True), x)
    torch.testing.assert_close(out, plain, rtol=0, atol=0)


def test_gradients_flow_through_tapped_features():
    model = create_model("cifar_resnet8", 10)
    with FeatureTap(model, {"s2": "layer2", "pre": "layer2.0.relu_out:in"}) as tap:
        _, feats = tap(x32())
    (feats["s2"].pow(2).mean() + feats["pre"].mean()).backward()
    assert model.conv1.weight.grad.abs().sum() > 0 and model.layer2[0].conv2.weight.grad.abs().sum() > 0
    assert model.layer3[0].conv1.weight.grad is None and model.fc.weight.grad is None


def test_hooks_are_removed_and_tensors_not_kept(resnet20):
    with FeatureTap(resnet20, stage_points(resnet20, pre_activation=True)) as tap:
        assert any(m._forward_hooks for m in resnet20.modules())
        assert any(m._forward_pre_hooks for m in resnet20.modules())
        out, feats = tap(x32())
        assert tap._store == {}
        ref = weakref.ref(feats["stage2"])
        del out, feats
        gc.collect()
        assert ref() is None
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in resnet20.modules())
    with pytest.raises(RuntimeError, match="removed"):
        tap(x32())
    explicit = FeatureTap(resnet20, {"a": "layer1"})
    explicit.remove()
    assert not any(m._forward_hooks for m in resnet20.modules())


def test_an_attached_tap_records_nothing_when_the_model_is_called_directly(resnet20):
    with FeatureTap(resnet20, {"s2": "layer2", "pre": "layer2.0.relu_out:in"}) as tap:
        x = x32()
        with torch.no_grad():
            plain = resnet20(x)  # e.g. evaluation while a distiller keeps its tap
            assert tap._store == {}
            shapes_meanwhile = feature_shapes(resnet20, {"s3": "layer3"})
            out, feats = tap(x)
        assert shapes_meanwhile == {"s3": torch.Size([64, 8, 8])}
        torch.testing.assert_close(out, plain)
        assert set(feats) == {"s2", "pre"}


# --- execution modes ---------------------------------------------------------------------------------

def test_works_under_inference_mode(resnet20):
    with torch.inference_mode():
        _, feats = tapped(resnet20, stage_points(resnet20), x32())
    assert feats["stage3"].is_inference() and feats["stage3"].shape == (2, 64, 8, 8)


def test_works_under_autocast(resnet20):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, feats = tapped(resnet20, {"s1": "layer1", "pre": "layer1.0.relu_out:in"}, x32())
    assert feats["s1"].dtype == torch.bfloat16 and out.dtype == torch.bfloat16


def test_works_with_channels_last():
    model = create_model("cifar_resnet8", 10).eval()
    x = x32()
    _, reference = tapped(model, stage_points(model), x)
    model = model.to(memory_format=torch.channels_last)
    _, feats = tapped(model, stage_points(model), x.to(memory_format=torch.channels_last))
    for name in reference:
        torch.testing.assert_close(feats[name], reference[name], rtol=1e-4, atol=1e-4)


# --- errors ------------------------------------------------------------------------------------------

def test_unknown_path_names_it_and_lists_candidates(resnet20):
    with pytest.raises(ConfigError, match=r"no module 'layer3\.9\.relu' in CifarResNet; close candidates: .*"
                                          r"layer3\.2\.relu") as info:
        FeatureTap(resnet20, {"x": "layer3.9.relu"})
    assert "\n" not in str(info.value)
    assert not any(m._forward_hooks for m in resnet20.modules())


def test_bad_suffix_is_rejected(resnet20):
    with pytest.raises(ConfigError, match="':in'"):
        FeatureTap(resnet20, {"x": "layer3:input"})


def test_a_module_that_runs_twice_is_rejected():
    model = torchvision.models.resnet18(num_classes=10).eval()  # each block calls its ReLU twice
    with FeatureTap(model, {"r": "layer1.0.relu"}) as tap:
        with pytest.raises(ConfigError, match="ran twice"):
            tap(torch.randn(1, 3, 32, 32))
        assert tap._store == {}


def test_models_without_points_are_rejected():
    with pytest.raises(ConfigError, match="declares no feature points"):
        stage_points(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()))


def test_a_stopping_tap_ends_the_forward_at_its_last_point(resnet20):
    """stop=True: the features are those of a full pass, nothing after the last point runs (for an ':in'
    point, not even its module), and the tap and plain forwards still work afterwards."""
    ran = []
    handles = [m.register_forward_hook(lambda m, i, o, name=name: ran.append(name))
               for name, m in resnet20.named_modules() if name in ("layer2", "layer3.0", "layer3", "fc")]
    x = x32()
    try:
        _, full = tapped(resnet20, {"a": "layer1", "b": "layer2"}, x)
        ran.clear()
        with FeatureTap(resnet20, {"a": "layer1", "b": "layer2"}, stop=True) as tap:
            out, early = tap(x)
            assert out is None and ran == ["layer2"]
            torch.testing.assert_close(early, full, rtol=0, atol=0)
            ran.clear()
            with FeatureTap(resnet20, {"c": "layer3.0:in"}, stop=True) as at_input:
                assert at_input(x)[0] is None and ran == ["layer2"]
            assert tap(x)[0] is None
        assert resnet20(x).shape == (2, 10)
    finally:
        for h in handles:
            h.remove()
