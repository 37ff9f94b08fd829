"""Schedules, budgets, run identity and strict spec loading."""
import math

import pytest

from kd_methods.engine.optim import build_optimizer, lr_at
from kd_methods.errors import ConfigError
from kd_methods.runs.spec import ExperimentSpec, Optim, Phase, Pretrained, from_dict, resolve


def optim(**kw):
    import dataclasses
    return dataclasses.asdict(Optim(**kw))


def test_multistep_schedule_drops_at_each_milestone():
    o = optim(lr=0.1, schedule="multistep", milestones=[60, 120], gamma=0.1)
    assert lr_at(o, 0, 200) == pytest.approx(0.1)
    assert lr_at(o, 59.99, 200) == pytest.approx(0.1)
    assert lr_at(o, 60, 200) == pytest.approx(0.01)
    assert lr_at(o, 150, 200) == pytest.approx(0.001)


def test_step_and_cosine_schedules():
    o = optim(lr=0.2, schedule="step", step_size=60, gamma=0.5)
    assert [lr_at(o, e, 200) for e in (0, 59, 60, 120, 180)] == pytest.approx([0.2, 0.2, 0.1, 0.05, 0.025])
    c = optim(lr=0.1, schedule="cosine")
    assert lr_at(c, 0, 10) == pytest.approx(0.1)
    assert lr_at(c, 5, 10) == pytest.approx(0.05)
    assert lr_at(c, 2.5, 10) == pytest.approx(0.05 * (1 + math.cos(math.pi / 4)))
    assert lr_at(o, 60, 200, lr_multiplier=4) == pytest.approx(0.4)


def test_optimizers_get_their_settings():
    import torch
    p = [torch.nn.Parameter(torch.zeros(2))]
    sgd = build_optimizer(p, optim(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"] and sgd.defaults["weight_decay"] == 1e-4
    rms = build_optimizer(p, optim(name="rmsprop", lr=0.005, momentum=0.0, weight_decay=0.0))
    assert isinstance(rms, torch.optim.RMSprop) and rms.defaults["lr"] == 0.005


def spec(**kw):
    base = dict(model="cifar_resnet20", dataset="cifar100",
                train=Phase(length=200, optim=Optim(milestones=[100, 150])))
    base.update(kw)
    return ExperimentSpec(**base)


def test_run_id_ignores_labels_but_not_training_fields():
    a = resolve(spec(paper="feed", table="Table 1"))
    b = resolve(spec(paper="dml", table="Table 2", label="x"))
    assert a["run_id"] == b["run_id"]
    assert resolve(spec(seed=1))["run_id"] != a["run_id"]
    assert resolve(spec(), "short")["run_id"] != a["run_id"]


def test_teacher_identity_enters_the_students_id():
    t0, t1 = spec(seed=0), spec(seed=1)
    s0 = resolve(spec(method="kd", model="cifar_resnet8", teachers=[t0]))
    s1 = resolve(spec(method="kd", model="cifar_resnet8", teachers=[t1]))
    assert s0["run_id"] != s1["run_id"]
    assert s0["teachers"][0]["run_id"] == resolve(t0)["run_id"]


def test_budgets_scale_lengths_and_milestones():
    paper = resolve(spec())
    short = resolve(spec(), "short")
    smoke = resolve(spec(), "smoke")
    assert paper["train"]["length"] == 200 and paper["dataset"] == "cifar100"
    assert short["train"]["length"] == 20 and short["train"]["optim"]["milestones"] == [10, 15]
    assert smoke["train"]["length"] == 1 and smoke["dataset"] == "synthetic100_16px"
    assert smoke["train"]["optim"]["milestones"] == [0.5, 0.75]
    assert smoke["train_subset"] and smoke["batch_size"] <= 32
    assert resolve(spec(), "paper", data="synthetic")["dataset"] == "synthetic100"
    it = resolve(spec(train=Phase(length=64000, unit="iter", optim=Optim(milestones=[32000, 48000]))), "smoke")
    assert it["train"]["length"] == 2 and it["train"]["optim"]["milestones"] == [1, 1.5]


def test_smoke_stand_ins_are_16px_only_where_every_network_of_the_run_takes_any_size():
    maxout = spec(model="fitnets_maxout_teacher", dataset="cifar10")  # a fixed 32x32 input
    small = {
        "a size-free network": spec(),
        "its teachers too": spec(method="kd", teachers=[spec(seed=1)]),
        "CIFAR-10": spec(dataset="cifar10"),
        "DML with size-free peers": spec(method="dml", method_args={"peers": ["cifar_mobilenet"]}),
    }
    kept = {
        "a fixed-size network": maxout,
        "a fixed-size teacher": spec(method="kd", dataset="cifar10", teachers=[maxout]),
        "a fixed-size teacher's student, once removed": spec(method="kd", dataset="cifar10", teachers=[
            spec(method="kd", dataset="cifar10", teachers=[maxout])]),
        "a fixed-size DML peer": spec(method="dml", dataset="cifar10",
                                      method_args={"peers": ["fitnets_maxout_teacher"]}),
        "FitNets' regressor, sized by the images": spec(
            model="fitnet1", method="fitnets", dataset="cifar10", teachers=[spec(model="fitnet4", dataset="cifar10")]),
    }
    for what, s in small.items():
        assert resolve(s, "smoke")["dataset"].endswith("_16px"), what
        assert not resolve(s, "short", data="synthetic")["dataset"].endswith("_16px"), what  # smoke only
    for what, s in kept.items():
        assert resolve(s, "smoke")["dataset"] in ("synthetic10", "synthetic100"), what
    assert resolve(spec(dataset="mnist"), "smoke")["dataset"] == "synthetic_mnist"  # 28x28 sets keep theirs
    teacher = resolve(small["its teachers too"], "smoke")["teachers"][0]
    assert teacher["dataset"] == "synthetic100_16px"


def test_the_16px_stand_in_is_the_32px_generator_at_16x16():
    from kd_methods.data import DataConfig, build_data
    data = build_data(DataConfig(name="synthetic100_16px", train_subset=8, test_subset=4, batch_size=4), "cpu")
    images, _ = next(iter(data.train))
    assert data.input_size == (3, 16, 16) and images.shape == (4, 3, 16, 16) and data.num_classes == 100


@pytest.mark.parametrize("data, message", [
    ({"model": "cifar_resnet20", "epochs": 3}, "unknown key 'epochs'"),
    ({"model": "cifar_resnet20", "batch_size": "big"}, "expected an integer"),
    ({"model": "cifar_resnet20", "train": {"length": 1, "optim": {"lr": "fast"}}}, "expected a number"),
    ({"model": "cifar_resnet20", "train": {"lenght": 3}}, "did you mean 'length'"),
    ({"method": "kd"}, "missing required key 'model'"),
])
def test_from_dict_rejects_bad_input(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(ExperimentSpec, data)


def test_teachers_load_as_specs_or_pretrained_files():
    s = from_dict(ExperimentSpec, {"model": "cifar_resnet20", "method": "kd", "teachers": [
        {"model": "cifar_resnet56"}, {"model": "resnet34", "path": "w.pt", "sha256": "ab" * 32}]})
    assert isinstance(s.teachers[0], ExperimentSpec) and isinstance(s.teachers[1], Pretrained)


def test_a_mapping_hyperparameter_takes_numbers_or_its_defaults_own_value():
    """The tolerant method's eta maps terms to numbers, with 'auto' (derived from K) as TSD's default:
    a number for any term, or 'auto' where it is the default, validates; another word does not."""
    def tolerant(eta):
        return resolve(ExperimentSpec(model="cifar_resnet8", method="tolerant", method_args={"eta": eta}))

    assert tolerant({"tsd": 0.9})["method_args"]["eta"] == {"tsd": 0.9}
    assert tolerant({"tsd": "auto", "ls": 0.3})["method_args"]["eta"]["ls"] == 0.3
    with pytest.raises(ConfigError, match=r"eta\.ls"):
        tolerant({"ls": "auto"})
    with pytest.raises(ConfigError, match=r"eta\.tsd"):
        tolerant({"tsd": "strong"})
