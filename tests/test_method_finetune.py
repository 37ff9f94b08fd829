"""Method `finetune`: the student starts from its teacher's weights; a resized classifier stays fresh."""
import pytest
import torch
import torch.nn.functional as F

from kd_methods.methods import StepContext, build_method
from kd_methods.methods.finetune import copy_weights
from kd_methods.models import create_model


def net(name="cifar_resnet8", num_classes=10, seed=0):
    torch.manual_seed(seed)
    return create_model(name, num_classes=num_classes)


def test_student_starts_from_the_teacher_and_keeps_no_teacher():
    teacher, student = net(seed=0), net(seed=1)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = teacher.eval()(x)
    d = build_method("finetune", student, [teacher], 10)
    for k, v in teacher.state_dict().items():
        assert torch.equal(student.state_dict()[k], v), k
    assert d.teachers == [] and d.reinitialised == []
    with torch.no_grad():
        assert torch.allclose(student.eval()(x), expected)
    # the student's weights are copies: training it leaves the source untouched
    before = teacher.conv1.weight.clone()
    student.conv1.weight.data.add_(1.0)
    assert torch.equal(teacher.conv1.weight, before)


def test_new_label_set_keeps_the_fresh_classifier():
    teacher, student = net(num_classes=100, seed=0), net(num_classes=10, seed=1)
    fresh = student.fc.weight.clone()
    d = build_method("finetune", student, [teacher], 10)
    assert d.reinitialised == ["fc.bias", "fc.weight"]
    assert torch.equal(student.fc.weight, fresh)
    assert torch.equal(student.conv1.weight, teacher.conv1.weight)


def test_another_architecture_is_refused():
    with pytest.raises(ValueError, match="does not fit the student"):
        copy_weights(net("cifar_resnet14"), net("cifar_resnet8"))
    with pytest.raises(ValueError, match="does not fit the student"):
        copy_weights(net("cifar_resnet8x4"), net("cifar_resnet8"))   # same keys, other widths


def test_loss_is_cross_entropy_and_reaches_every_parameter():
    student = net(seed=1)
    d = build_method("finetune", student, [net(seed=0)], 10)
    (stage,) = d.stages()
    assert stage.name == "train" and stage.losses == ("loss_ce",)
    x, y = torch.randn(3, 3, 32, 32), torch.tensor([0, 4, 9])
    d.train()
    d.set_trainable(stage)
    logits, losses = d(x, y, StepContext(stage))
    assert set(losses) == {"loss_ce"}
    assert torch.allclose(losses["loss_ce"], F.cross_entropy(logits, y))
    losses["loss_ce"].backward()
    assert all(p.grad is not None for p in student.parameters())


@pytest.mark.parametrize("n", [0, 2])
def test_needs_exactly_one_source(n):
    with pytest.raises(ValueError, match="teachers"):
        build_method("finetune", net(), [net(seed=s) for s in range(n)], 10)
