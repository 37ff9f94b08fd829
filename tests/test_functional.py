"""Each loss of kd_methods.functional against its formula written out by hand (loops, plain math)."""
import math

import pytest
import torch

import kd_methods.functional as K

torch.manual_seed(0)


def softmax_row(row):
    e = [math.exp(v) for v in row]
    z = sum(e)
    return [v / z for v in e]


def kl_rows(p, q):
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q) if pi > 0)


def close(a, b, tol=1e-5):
    a, b = (float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for v in (a, b))
    return abs(a - b) <= tol * max(1.0, abs(b))


# -- logits ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("T", [1.0, 4.0])
@pytest.mark.parametrize("n", [1, 3])
def test_kd_loss_matches_hand_formula(T, n):
    s, t = torch.randn(n, 5), torch.randn(n, 5)
    want = 0.0
    for i in range(n):
        p = softmax_row([v / T for v in t[i].tolist()])
        q = softmax_row([v / T for v in s[i].tolist()])
        want += T * T * kl_rows(p, q)
    assert close(K.kd_loss(s, t, T), want / n)


def test_kd_loss_zero_when_equal_and_positive_otherwise():
    s = torch.randn(4, 7)
    assert K.kd_loss(s, s.clone(), 3.0).abs() < 1e-6
    assert K.kd_loss(s, torch.randn(4, 7), 3.0) > 0


def test_kd_loss_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shapes differ"):
        K.kd_loss(torch.randn(2, 5), torch.randn(2, 6), 4)


def test_ensemble_kd_averages_soft_outputs_not_logits():
    s = torch.randn(2, 6)
    ts = [torch.randn(2, 6) * 3 for _ in range(3)]
    T = 2.0
    want = 0.0
    for i in range(2):
        soft = [softmax_row([v / T for v in t[i].tolist()]) for t in ts]
        p = [sum(col) / 3 for col in zip(*soft)]
        want += T * T * kl_rows(p, softmax_row([v / T for v in s[i].tolist()]))
    got = K.ensemble_kd_loss(s, ts, T)
    assert close(got, want / 2)
    # averaging logits would be a different target
    assert not close(got, K.kd_loss(s, torch.stack(ts).mean(0), T), tol=1e-3)


def test_ensemble_kd_with_one_teacher_is_kd():
    s, t = torch.randn(3, 4), torch.randn(3, 4)
    assert close(K.ensemble_kd_loss(s, [t], 4.0), K.kd_loss(s, t, 4.0))
    with pytest.raises(ValueError):
        K.ensemble_kd_loss(s, [], 4.0)


def test_dml_loss_matches_formula_and_detaches_peers():
    x = torch.randn(3, 5, requires_grad=True)
    peers = [torch.randn(3, 5, requires_grad=True) for _ in range(2)]
    want = 0.0
    for peer in peers:
        for i in range(3):
            want += kl_rows(softmax_row(peer[i].tolist()), softmax_row(x[i].tolist())) / 3
    loss = K.dml_loss(x, peers)
    assert close(loss, want / 2)
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in peers)


def test_dml_loss_single_tensor_peer_and_zero_when_equal():
    x = torch.randn(2, 4)
    assert close(K.dml_loss(x, x.clone()), 0.0)
    assert close(K.dml_loss(x, torch.ones(2, 4)), K.dml_loss(x, [torch.ones(2, 4)]))


# -- tolerant teacher -------------------------------------------------------------------------------

def test_tsd_penalty_is_the_gap_from_the_highest_score_as_the_paper_writes_it():
    """f_{a_1} - mean(f_{a_2}..f_{a_k}), f_{a_j} the j-th largest score: the label plays no part."""
    logits = torch.randn(3, 6)
    k = 3
    want = 0.0
    for i in range(3):
        f = sorted(softmax_row(logits[i].tolist()), reverse=True)
        want += f[0] - sum(f[1:k]) / (k - 1)
    for y in (torch.tensor([0, 4, 2]), torch.tensor([5, 5, 5]), None):
        assert close(K.tsd_penalty(logits, y, k), want / 3)


def test_tsd_penalty_forms_differ_on_an_image_whose_highest_score_is_not_its_label():
    # scores e^2, e^1, e^0, e^-1 over their sum: 0.6439, 0.2369, 0.0871, 0.0321; the label is class 1
    logits, y = torch.tensor([[2.0, 1.0, 0.0, -1.0]]), torch.tensor([1])
    z = sum(math.exp(v) for v in (2, 1, 0, -1))
    f = [math.exp(v) / z for v in (2, 1, 0, -1)]
    assert close(K.tsd_penalty(logits, y, 3), f[0] - (f[1] + f[2]) / 2)            # 0.4819, the paper's
    assert close(K.tsd_penalty(logits, y, 3, anchor="label"), f[1] - (f[0] + f[2]) / 2)  # -0.1286
    assert close(K.tsd_penalty(logits, y, 3), 0.4819, tol=1e-3)
    assert close(K.tsd_penalty(logits, y, 3, anchor="label"), -0.1286, tol=1e-3)
    right = torch.tensor([0])  # where the label holds the highest score the two forms agree
    assert close(K.tsd_penalty(logits, right, 3), K.tsd_penalty(logits, right, 3, anchor="label"))


def test_tsd_penalty_label_anchor_excludes_the_label_from_the_runners_up():
    logits = torch.randn(3, 6)
    y = torch.tensor([0, 4, 2])
    want = 0.0
    for i in range(3):
        f = softmax_row(logits[i].tolist())
        others = sorted((f[c] for c in range(6) if c != int(y[i])), reverse=True)[:2]
        want += f[int(y[i])] - sum(others) / 2
    assert close(K.tsd_penalty(logits, y, 3, anchor="label"), want / 3)


def test_tsd_penalty_rejects_bad_k_and_anchor():
    logits = torch.tensor([[5.0, 1.0, 0.0, -1.0]])
    for k in (1, 5):
        with pytest.raises(ValueError, match="k must be"):
            K.tsd_penalty(logits, torch.tensor([0]), k)
    with pytest.raises(ValueError, match="anchor must be"):
        K.tsd_penalty(logits, torch.tensor([0]), 2, anchor="primary")
    with pytest.raises(ValueError, match="needs the targets"):
        K.tsd_penalty(logits, None, 2, anchor="label")


def test_label_smoothing_penalty_matches_kl_from_uniform():
    logits = torch.randn(2, 5)
    want = sum(kl_rows([0.2] * 5, softmax_row(logits[i].tolist())) for i in range(2)) / 2
    assert close(K.label_smoothing_penalty(logits), want)
    assert close(K.label_smoothing_penalty(torch.zeros(2, 5)), 0.0)


def test_confidence_penalty_is_negative_entropy():
    logits = torch.randn(2, 5)
    want = sum(sum(p * math.log(p) for p in softmax_row(logits[i].tolist())) for i in range(2)) / 2
    assert close(K.confidence_penalty(logits), want)
    assert close(K.confidence_penalty(torch.zeros(1, 8)), -math.log(8))


# -- attention transfer ----------------------------------------------------------------------------

def hand_attention(feat, p):
    n, c, h, w = feat.shape
    out = []
    for i in range(n):
        q = [sum(abs(float(feat[i, ch, y, x])) ** p for ch in range(c)) / c
             for y in range(h) for x in range(w)]
        norm = math.sqrt(sum(v * v for v in q))
        out.append([v / norm for v in q])
    return out


@pytest.mark.parametrize("p", [1, 2])
def test_attention_map_matches_hand_formula(p):
    f = torch.randn(2, 3, 2, 3)
    got = K.attention_map(f, p)
    assert got.shape == (2, 6)
    assert torch.allclose(got, torch.tensor(hand_attention(f, p)), atol=1e-6)


def test_at_loss_matches_formula_across_channel_counts():
    s, t = torch.randn(2, 3, 2, 2), torch.randn(2, 5, 2, 2)
    qs, qt = hand_attention(s, 2), hand_attention(t, 2)
    want = sum((a - b) ** 2 for i in range(2) for a, b in zip(qs[i], qt[i])) / (2 * 4)
    assert close(K.at_loss(s, t), want)
    assert close(K.at_loss(s, s.clone()), 0.0)


def test_at_loss_pools_the_larger_map_by_average():
    s, t = torch.randn(1, 2, 4, 4), torch.randn(1, 3, 2, 2)
    pooled = torch.zeros(1, 2, 2, 2)
    for y in range(2):
        for x in range(2):
            pooled[0, :, y, x] = s[0, :, 2 * y:2 * y + 2, 2 * x:2 * x + 2].mean((1, 2))
    assert close(K.at_loss(s, t), K.at_loss(pooled, t))
    assert close(K.at_loss(t, s), K.at_loss(t, pooled))


# -- FSP -------------------------------------------------------------------------------------------

def test_fsp_matrix_matches_hand_formula():
    f1, f2 = torch.randn(2, 3, 2, 2), torch.randn(2, 4, 2, 2)
    g = K.fsp_matrix(f1, f2)
    assert g.shape == (2, 3, 4)
    for n in range(2):
        for i in range(3):
            for j in range(4):
                want = sum(float(f1[n, i, y, x] * f2[n, j, y, x]) for y in range(2) for x in range(2)) / 4
                assert close(g[n, i, j], want)


def test_fsp_matrix_max_pools_the_larger_map():
    f1, f2 = torch.randn(1, 2, 4, 4), torch.randn(1, 3, 2, 2)
    pooled = torch.zeros(1, 2, 2, 2)
    for y in range(2):
        for x in range(2):
            pooled[0, :, y, x] = f1[0, :, 2 * y:2 * y + 2, 2 * x:2 * x + 2].amax((1, 2))
    assert torch.allclose(K.fsp_matrix(f1, f2), K.fsp_matrix(pooled, f2), atol=1e-6)


def test_fsp_loss_weighted_sum_of_batch_mean_frobenius():
    sp = [(torch.randn(2, 3, 2, 2), torch.randn(2, 3, 2, 2)), (torch.randn(2, 2, 1, 1), torch.randn(2, 4, 1, 1))]
    tp = [(torch.randn(2, 3, 2, 2), torch.randn(2, 3, 2, 2)), (torch.randn(2, 2, 1, 1), torch.randn(2, 4, 1, 1))]
    w = [0.5, 2.0]
    want = 0.0
    for wi, (s1, s2), (t1, t2) in zip(w, sp, tp):
        d = K.fsp_matrix(s1, s2) - K.fsp_matrix(t1, t2)
        want += wi * sum(float((d[n] ** 2).sum()) for n in range(2)) / 2
    assert close(K.fsp_loss(sp, tp, w), want)
    assert close(K.fsp_loss(sp, sp), 0.0)
    with pytest.raises(ValueError):
        K.fsp_loss(sp, tp[:1])
    with pytest.raises(ValueError, match="shapes differ"):
        K.fsp_loss(sp[:1], tp[1:])


# -- hints, factors, L1 ----------------------------------------------------------------------------

def test_hint_loss_is_half_batch_mean_squared_norm():
    s, t = torch.randn(3, 2, 2, 2), torch.randn(3, 2, 2, 2)
    want = sum(0.5 * float(((s[i] - t[i]) ** 2).sum()) for i in range(3)) / 3
    assert close(K.hint_loss(s, t), want)
    with pytest.raises(ValueError):
        K.hint_loss(s, torch.randn(3, 4, 2, 2))


def test_factor_loss_matches_normalised_l1_mean():
    s, t = torch.randn(2, 3, 2, 2), torch.randn(2, 3, 2, 2)
    want = 0.0
    for i in range(2):
        a, b = s[i].flatten().tolist(), t[i].flatten().tolist()
        na, nb = math.sqrt(sum(v * v for v in a)), math.sqrt(sum(v * v for v in b))
        want += sum(abs(x / na - y / nb) for x, y in zip(a, b))
    assert close(K.factor_loss(s, t), want / s.numel())
    # scale-invariant per sample, zero for equal inputs
    assert close(K.factor_loss(s * 7, s), 0.0)
    assert close(K.feed_loss(s, t), K.factor_loss(s, t))


def test_feature_l1_and_reconstruction():
    s, t = torch.randn(2, 3, 2, 2), torch.randn(2, 3, 2, 2)
    l1 = sum(abs(a - b) for a, b in zip(s.flatten().tolist(), t.flatten().tolist())) / s.numel()
    l2 = sum((a - b) ** 2 for a, b in zip(s.flatten().tolist(), t.flatten().tolist())) / s.numel()
    assert close(K.feature_l1_loss(s, t), l1)
    assert close(K.reconstruction_loss(s, t), l1)
    assert close(K.reconstruction_loss(s, t, p=2), l2)
    with pytest.raises(ValueError):
        K.reconstruction_loss(s, t, p=3)
    with pytest.raises(ValueError):
        K.feature_l1_loss(s, torch.randn(2, 4, 2, 2))


# -- float32 under autocast, gradients ---------------------------------------------------------------

def test_losses_compute_in_float32_under_autocast():
    s, t = torch.randn(2, 5), torch.randn(2, 5)
    f, g = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outs = [K.kd_loss(s.bfloat16(), t.bfloat16(), 4), K.at_loss(f.bfloat16(), g),
                K.fsp_loss([(f.bfloat16(), g)], [(g, f)]), K.factor_loss(f.bfloat16(), g),
                K.dml_loss(s.bfloat16(), t), K.confidence_penalty(s.bfloat16())]
    assert all(o.dtype == torch.float32 and o.dim() == 0 for o in outs)
    assert close(outs[0], K.kd_loss(s.bfloat16().float(), t.bfloat16().float(), 4), tol=1e-5)


@pytest.mark.parametrize("fn", [
    lambda s, t: K.kd_loss(s.mean((2, 3)), t.mean((2, 3)), 4.0),
    lambda s, t: K.at_loss(s, t), lambda s, t: K.factor_loss(s, t), lambda s, t: K.hint_loss(s, t),
    lambda s, t: K.feature_l1_loss(s, t), lambda s, t: K.fsp_loss([(s, s)], [(t, t)]),
])
def test_gradient_reaches_student_argument(fn):
    s = torch.randn(2, 3, 4, 4, requires_grad=True)
    t = torch.randn(2, 3, 4, 4)
    fn(s, t).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
