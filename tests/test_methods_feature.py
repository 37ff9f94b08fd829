"""KD, BAN, AT, L1, FT and FEED: losses equal the functional math applied by hand, gradients reach the
student and the adapters but never the teachers, stages train what they declare."""
import copy

import pytest
import torch
import torch.nn.functional as F

import kd_methods.functional as K
from kd_methods.errors import ConfigError
from kd_methods.methods import METHODS, StepContext, build_method
from kd_methods.models import FeatureTap, create_model, stage_points

NUM_CLASSES = 10


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, 32, 32, generator=g), torch.tensor([3, 7])


def tiny(name="cifar_resnet8"):
    return create_model(name, NUM_CLASSES)


def make(method, n_teachers=1, student="cifar_resnet8", teacher="cifar_resnet8", **hp):
    torch.manual_seed(0)
    return build_method(method, tiny(student), [tiny(teacher) for _ in range(n_teachers)],
                        num_classes=NUM_CLASSES, **hp)


def step(d, images, targets, stage=None):
    stage = stage or d.stages()[-1]
    d.train()
    d.set_trainable(stage)
    return d(images, targets, StepContext(stage))


def by_hand(model, images, points):
    """Logits and features of one network, computed independently of the distiller."""
    with FeatureTap(model, {p: stage_points(model)[p] for p in points}) as tap:
        return tap(images)


def teacher_by_hand(teacher, images, points):
    with torch.no_grad():
        return by_hand(teacher, images, points)


# -- losses equal the functional form ------------------------------------------------------------

def test_kd_single_teacher_is_ce_plus_weighted_kd_loss(batch):
    x, y = batch
    d = make("kd", weight=0.7, temperature=3.0)
    logits, losses = step(d, x, y)
    with torch.no_grad():
        t = d.teachers[0](x)
    assert set(losses) == {"loss_ce", "loss_kd"} == set(d.stages()[0].losses)
    assert torch.allclose(losses["loss_ce"], F.cross_entropy(logits, y))
    assert torch.allclose(losses["loss_kd"], 0.7 * K.kd_loss(logits, t, 3.0))


def test_kd_several_teachers_distils_the_ensemble(batch):
    x, y = batch
    d = make("kd", n_teachers=3)
    logits, losses = step(d, x, y)
    with torch.no_grad():
        ts = [t(x) for t in d.teachers]
    assert torch.allclose(losses["loss_kd"], K.ensemble_kd_loss(logits, ts, 4.0))


def test_ban_is_kd_at_temperature_one_with_one_teacher(batch):
    x, y = batch
    d = make("ban")
    assert d.hp == {"temperature": 1.0, "weight": 1.0}
    logits, losses = step(d, x, y)
    with torch.no_grad():
        t = d.teachers[0](x)
    assert torch.allclose(losses["loss_kd"], K.kd_loss(logits, t, 1.0))
    with pytest.raises(ValueError, match="teachers"):
        make("ban", n_teachers=2)


def test_at_sums_half_beta_at_loss_over_groups_and_teachers(batch):
    x, y = batch
    d = make("at", n_teachers=2)
    groups = ("stage1", "stage2", "stage3")
    assert d.points == groups
    logits, losses = step(d, x, y)
    _, s_feats = by_hand(d.student, x, groups)
    want = sum(K.at_loss(s_feats[g], teacher_by_hand(t, x, groups)[1][g]) for t in d.teachers for g in groups)
    assert torch.allclose(losses["loss_at"], 500.0 * want)
    assert torch.allclose(losses["loss_ce"], F.cross_entropy(logits, y))


def test_at_works_across_widths(batch):
    x, y = batch  # ResNet-8x4 teacher: 4x the channels of the student at every stage
    _, losses = step(make("at", teacher="cifar_resnet8x4"), x, y)
    assert losses["loss_at"] > 0


def test_l1_is_mean_abs_difference_of_final_maps(batch):
    x, y = batch
    d = make("l1", n_teachers=2, weight=0.3)
    _, losses = step(d, x, y)
    _, s = by_hand(d.student, x, ["final"])
    want = sum(K.feature_l1_loss(s["final"], teacher_by_hand(t, x, ["final"])[1]["final"]) for t in d.teachers)
    assert torch.allclose(losses["loss_l1"], 0.3 * want)


def test_l1_rejects_teachers_of_another_shape():
    with pytest.raises(ConfigError, match="equal shapes"):
        make("l1", teacher="cifar_resnet8x4")


def test_feed_uses_one_ntl_per_teacher_and_the_ft_form(batch):
    x, y = batch
    d = make("feed", n_teachers=3)
    assert len(d.ntls) == 3
    _, losses = step(d, x, y)
    _, s = by_hand(d.student, x, ["final"])
    want = sum(K.factor_loss(ntl(s["final"]), teacher_by_hand(t, x, ["final"])[1]["final"])
               for ntl, t in zip(d.ntls, d.teachers))
    assert torch.allclose(losses["loss_feed"], 500.0 * want)


def test_feed_ntl_maps_student_channels_to_teacher_channels(batch):
    x, y = batch
    d = make("feed", teacher="cifar_resnet8x4")
    assert d.ntls[0][0].in_channels == 64 and d.ntls[0][-1].out_channels == 256
    _, losses = step(d, x, y)
    assert torch.isfinite(losses["loss_feed"])


def test_ft_paraphraser_stage_reconstructs_teacher_final_map(batch):
    x, y = batch
    d = make("ft", n_teachers=2)
    paraphraser = d.stages()[0]
    _, losses = step(d, x, y, paraphraser)
    assert set(losses) == {"loss_rec"}
    want = 0
    for p, t in zip(d.paraphrasers, d.teachers):
        f = teacher_by_hand(t, x, ["final"])[1]["final"]
        want = want + K.reconstruction_loss(p(f), f)
    assert torch.allclose(losses["loss_rec"], want)


def test_ft_train_stage_matches_translator_and_paraphrased_factor(batch):
    x, y = batch
    d = make("ft", n_teachers=2)
    logits, losses = step(d, x, y)
    _, s = by_hand(d.student, x, ["final"])
    want = 0
    for p, tr, t in zip(d.paraphrasers, d.translators, d.teachers):
        f = teacher_by_hand(t, x, ["final"])[1]["final"]
        want = want + K.factor_loss(tr(s["final"]), p.encoder(f))
    assert torch.allclose(losses["loss_ft"], 500.0 * want)
    assert torch.allclose(losses["loss_ce"], F.cross_entropy(logits, y))


def test_ft_factor_has_rate_times_teacher_channels():
    d = make("ft", teacher="cifar_resnet8x4", rate=0.25)  # teacher final: 256 channels
    f = d.paraphrasers[0].encoder(torch.randn(1, 256, 8, 8))
    assert f.shape == (1, 64, 8, 8)
    assert d.translators[0](torch.randn(1, 64, 8, 8)).shape == (1, 64, 8, 8)


# -- what trains, what stays frozen --------------------------------------------------------------

FEATURE_CASES = [("kd", 2), ("ban", 1), ("at", 2), ("l1", 2), ("ft", 2), ("feed", 2)]


@pytest.mark.parametrize("method,n", FEATURE_CASES)
def test_every_stage_trains_its_groups_and_never_the_teachers(method, n, batch):
    x, y = batch
    d = make(method, n_teachers=n)
    before = [copy.deepcopy(t.state_dict()) for t in d.teachers]
    groups = d.trainable_groups()
    for stage in d.stages():
        d.zero_grad(set_to_none=True)
        params = d.parameters_for(stage)
        opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
        _, losses = step(d, x, y, stage)
        assert set(losses) == set(stage.losses)
        sum(losses.values()).backward()
        for name, module in groups.items():
            grads = [p.grad for p in module.parameters()]
            if name in stage.trains:
                assert all(g is not None for g in grads), f"{method}/{stage.name}: {name} got no gradient"
            else:
                assert all(g is None for g in grads), f"{method}/{stage.name}: {name} should be frozen"
        opt.step()
        for t, sd in zip(d.teachers, before):
            assert not t.training
            assert all(p.grad is None and not p.requires_grad for p in t.parameters())
            assert all(torch.equal(v, sd[k]) for k, v in t.state_dict().items())


@pytest.mark.parametrize("method,n", FEATURE_CASES)
def test_teachers_stay_out_of_the_module_tree(method, n):
    d = make(method, n_teachers=n)
    teacher_params = {id(p) for t in d.teachers for p in t.parameters()}
    assert not teacher_params & {id(p) for p in d.parameters()}
    d.train()
    assert d.student.training and not any(t.training for t in d.teachers)
    assert all(k.split(".")[0] in d.trainable_groups() for k in d.state_dict())


def test_stage_declarations():
    assert [(s.name, s.trains) for s in make("ft").stages()] == [
        ("paraphraser", ("paraphrasers",)), ("train", ("student", "translators"))]
    assert [(s.name, s.trains) for s in make("feed").stages()] == [("train", ("student", "ntls"))]
    for name in ("kd", "ban", "at", "l1"):
        assert [(s.name, s.trains) for s in make(name).stages()] == [("train", ("student",))]
    for name in ("kd", "ban", "at", "l1", "ft", "feed"):
        cls = METHODS.get(name)
        assert cls.stage_names == tuple(s.name for s in make(name).stages())


def test_feed_evaluates_the_student_alone_and_taps_leave_direct_calls_alone(batch):
    x, _ = batch
    d = make("feed", n_teachers=2)
    assert list(d.eval_models()) == ["student"]
    d.eval()
    with torch.no_grad():
        a, b = d(x), d.student(x)  # the hooks must not record (or complain) outside a tap call
    assert torch.equal(a, b)


# -- configuration and provenance ----------------------------------------------------------------

def test_provenance_records_sources():
    rows = {(r["method"], r["name"]): r for cls in ("kd", "ban", "at", "ft", "feed", "l1")
            for r in METHODS.get(cls).provenance()}
    assert rows[("feed", "beta")]["source"] == "assumed" and rows[("feed", "beta")]["value"] == 500.0
    assert rows[("kd", "temperature")]["source"] == "assumed"
    assert rows[("ban", "temperature")]["source"] == "paper"
    assert rows[("at", "beta")] ["source"] == "paper" and rows[("at", "beta")]["value"] == 1000.0
    assert rows[("ft", "beta")]["source"] == "code" and rows[("ft", "rate")]["value"] == 0.5
    assert rows[("l1", "weight")]["source"] == "assumed"
    assert any(r["method"] == "feed" and r["name"] == "deviation" for r in rows.values())
    overridden = METHODS.get("feed").provenance({"beta": 100.0})
    assert [r for r in overridden if r["name"] == "beta"][0]["source"] == "config"


def test_bad_configs_fail_with_one_line():
    with pytest.raises(ValueError, match="teachers"):
        build_method("feed", tiny(), [], num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match="no hyper-parameter"):
        make("at", gamma=1)
    with pytest.raises(ConfigError, match="temperature"):
        make("kd", temperature=0)
    with pytest.raises(ConfigError, match="rate"):
        make("ft", rate=0)
    with pytest.raises(ConfigError, match="stage groups"):
        make("at", teacher="cifar_mobilenet")


# -- the papers' pairs, two SGD steps each --------------------------------------------------------

class ModelCache(dict):
    """Each big model is built once per module, on first use."""

    def __missing__(self, name):
        torch.manual_seed(0)
        self[name] = create_model(name, 100)
        return self[name]


@pytest.fixture(scope="module")
def big_models():
    return ModelCache()


PAPER_PAIRS = [
    ("kd", "cifar_resnet20", "cifar_resnet110"), ("at", "cifar_resnet20", "cifar_resnet110"),
    *[(m, a, a) for a in ("cifar_wrn_28_10", "cifar_resnext29_16x64d") for m in ("feed", "l1", "at", "ft")],
]


@pytest.mark.slow
@pytest.mark.parametrize("method,student,teacher", PAPER_PAIRS)
def test_two_sgd_steps_on_the_papers_pairs(method, student, teacher, big_models):
    torch.manual_seed(1)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([5, 50])
    s = copy.deepcopy(big_models[student])
    d = build_method(method, s, [big_models[teacher]], num_classes=100)
    before = {k: v.clone() for k, v in big_models[teacher].state_dict().items()}
    head = s.get_classifier().weight.detach().clone()
    for stage in d.stages():
        opt = torch.optim.SGD(d.parameters_for(stage), lr=0.01, momentum=0.9)
        for _ in range(2):
            _, losses = step(d, x, y, stage)
            loss = sum(losses.values())
            assert torch.isfinite(loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    assert not torch.equal(s.get_classifier().weight, head)  # the student learned
    assert all(torch.equal(v, before[k]) for k, v in big_models[teacher].state_dict().items())
    assert not big_models[teacher].training
