"""FitNets' MNIST networks: shapes, parameter counts from the released configurations, feature taps."""
import torch

from kd_methods.methods import build_method
from kd_methods.models import count_parameters, create_model, feature_shapes, stage_points


def conv(cin, cout, pieces, k):
    return cin * cout * pieces * k * k + cout * pieces


def test_teacher_is_goodfellows_mnist_maxout_net():
    m = create_model("fitnets_mnist_teacher", num_classes=10)
    # 28 -(8x8)-> 21 -pool 4/2-> 10 -(8x8 pad 3)-> 9 -pool-> 4 -(5x5 pad 3)-> 6 -pool 2/2-> 3; softmax on 24x3x3
    expected = conv(1, 48, 2, 8) + conv(48, 48, 2, 8) + conv(48, 24, 4, 5) + (24 * 9 * 10 + 10)
    assert count_parameters(m) == expected == 418_714
    assert m(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    shapes = feature_shapes(m, stage_points(m), (1, 28, 28))
    assert [tuple(shapes[k]) for k in ("stage1", "stage2", "stage3")] == [(48, 10, 10), (48, 4, 4), (24, 3, 3)]


def test_fitnet_is_the_authors_six_layer_net():
    m = create_model("fitnet_mnist", num_classes=10)
    expected = (conv(1, 16, 2, 5) + conv(16, 16, 2, 3) + conv(16, 16, 2, 5) + conv(16, 16, 2, 3)
                + conv(16, 12, 4, 3) + conv(12, 12, 4, 3) + (12 * 9 * 10 + 10))
    assert count_parameters(m) == expected == 36_226
    shapes = feature_shapes(m, stage_points(m), (1, 28, 28))
    assert [tuple(shapes[k]) for k in ("stage1", "stage2", "stage3")] == [(16, 10, 10), (16, 4, 4), (12, 3, 3)]


def test_hint_pair_connects_through_a_maxout_regressor():
    teacher, student = (create_model(n, num_classes=10) for n in ("fitnets_mnist_teacher", "fitnet_mnist"))
    d = build_method("fitnets", student, [teacher], 10)   # input size from the model's pretrained_cfg
    (reg,) = d.regressors.values()
    assert reg.activation == "maxout" and reg.pieces == 2
    assert tuple(reg.conv.kernel_size) == (1, 1) and reg.conv.out_channels == 48 * 2
