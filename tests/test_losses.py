"""Each loss of rlq.losses against an explicit hand computation (plain math / numpy loops) and a paper value."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rlq.errors import ConfigError
from rlq.losses import (
    OFFICIAL_KL_LAMBDA,
    abs_cos_loss,
    batch_hard_triplet,
    cal_adversarial_loss,
    clothes_ce,
    distillation_loss,
    kl_divergence,
    label_smoothed_ce,
    pid2clothes_matrix,
    positive_clothes_mask,
    ss_mse,
    tad_distillation,
)

# ---------------------------------------------------------------- independent references (no torch)


def _log_softmax_row(row: list[float]) -> list[float]:
    m = max(row)
    lse = m + math.log(sum(math.exp(x - m) for x in row))
    return [x - lse for x in row]


def _ref_lsce(logits: list[list[float]], target: list[int], eps: float, ignore: int | None = None) -> float:
    total, count = 0.0, 0
    for row, y in zip(logits, target):
        if ignore is not None and y == ignore:
            continue
        n = len(row)
        lp = _log_softmax_row(row)
        total += sum(-((1 - eps) * (k == y) + eps / n) * lp[k] for k in range(n))
        count += 1
    return total / count if count else 0.0


def _ref_cal(
    cos: list[list[float]], labels: list[int], pos: list[list[bool]], s: float = 16.0, eps: float = 0.1
) -> float:
    total = 0.0
    for row, c, prow in zip(cos, labels, pos):
        z = [s * x for x in row]
        neg_sum = sum(math.exp(zj) for zj, p in zip(z, prow) if not p)
        n_pos = sum(prow)
        for k, zk in enumerate(z):
            t = (1 - eps) * (k == c) + (eps / n_pos) * prow[k]
            if t:
                total += -t * (zk - math.log(neg_sum + math.exp(zk)))
    return total / len(cos)


def _ref_kl_sum(a: list[list[float]], b: list[list[float]], tau: float) -> float:
    total = 0.0
    for ra, rb in zip(a, b):
        lp = _log_softmax_row([x / tau for x in ra])
        lq = _log_softmax_row([x / tau for x in rb])
        total += sum(math.exp(p) * (p - q) for p, q in zip(lp, lq))
    return total


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _ref_triplet(feats: np.ndarray, pids: list[int], margin: float, anchors: range | None = None) -> float:
    f = [_unit(x) for x in feats]
    idx = range(len(f)) if anchors is None else anchors
    losses = []
    for i in idx:
        d_ap, d_an = -math.inf, math.inf
        for j in range(len(f)):
            d = 1.0 - float(np.dot(f[i], f[j]))
            if pids[j] == pids[i]:
                d_ap = max(d_ap, d)
            else:
                d_an = min(d_an, d)
        losses.append(max(0.0, d_ap - d_an + margin))
    return sum(losses) / len(losses)


def _ref_cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def _ref_sqdist(t: np.ndarray, s: np.ndarray) -> float:
    return float(np.mean([np.sum((_unit(x) - _unit(y)) ** 2) for x, y in zip(t, s)]))


def _t(x, dtype=torch.float64, grad: bool = False) -> torch.Tensor:
    return torch.tensor(x, dtype=dtype, requires_grad=grad)


# ---------------------------------------------------------------- label-smoothed CE

LOGITS = [[1.0, -0.5, 2.0, 0.3], [0.2, 0.2, -1.0, 3.0], [-2.0, 0.5, 0.0, 1.5]]


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_lsce_matches_hand_formula(eps: float) -> None:
    target = [2, 0, 3]
    got = label_smoothed_ce(_t(LOGITS), torch.tensor(target), eps=eps).item()
    assert got == pytest.approx(_ref_lsce(LOGITS, target, eps), rel=1e-12)


def test_lsce_uniform_logits_is_log_n() -> None:
    # Paper: log q_k = -log n for every k and the smoothed target sums to 1, so the loss is log n for any eps.
    for n in (2, 5):
        got = label_smoothed_ce(torch.zeros(3, n), torch.tensor([0, 1, 1]), eps=0.1).item()
        assert got == pytest.approx(math.log(n), rel=1e-6)


def test_lsce_two_classes_paper_value() -> None:
    # Logits (0, ln 3): log q = (ln 1/4, ln 3/4); target for class 1 with eps=0.1: (0.05, 0.95).
    # Loss = 0.05*ln 4 + 0.95*ln(4/3) = 0.0693147 + 0.2732984 = 0.3426131.
    got = label_smoothed_ce(_t([[0.0, math.log(3.0)]]), torch.tensor([1]), eps=0.1).item()
    assert got == pytest.approx(0.05 * math.log(4) + 0.95 * math.log(4 / 3), rel=1e-12)
    assert got == pytest.approx(0.3426131, abs=1e-6)


def test_lsce_ignore_index_excludes_rows() -> None:
    target = [2, -1, 3]
    got = label_smoothed_ce(_t(LOGITS), torch.tensor(target), eps=0.1, ignore_index=-1).item()
    # Mean over the 2 kept rows (the reference skips row 1 entirely and divides by 2).
    assert got == pytest.approx(_ref_lsce(LOGITS, target, 0.1, ignore=-1), rel=1e-12)


def test_lsce_all_ignored_is_zero_with_grad() -> None:
    logits = _t(LOGITS, grad=True)
    loss = label_smoothed_ce(logits, torch.tensor([-1, -1, -1]), ignore_index=-1)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_lsce_gradcheck_and_bad_eps() -> None:
    logits = _t(LOGITS, grad=True)
    target = torch.tensor([2, 0, 3])
    assert torch.autograd.gradcheck(lambda x: label_smoothed_ce(x, target, eps=0.1), (logits,))
    with pytest.raises(ConfigError, match="eps"):
        label_smoothed_ce(logits, target, eps=1.0)
    with pytest.raises(ValueError, match="target"):
        label_smoothed_ce(logits, torch.tensor([0, 1]))


# ---------------------------------------------------------------- clothes CE (CosFace s=16, m=0)


def test_clothes_ce_matches_hand_formula() -> None:
    cos = [[0.5, -0.2, 0.1], [0.0, 0.3, 0.9]]
    target = [0, 2]
    ref = 0.0
    for row, c in zip(cos, target):
        z = [16 * x for x in row]
        ref += -(z[c] - math.log(sum(math.exp(v) for v in z)))
    got = clothes_ce(_t(cos), torch.tensor(target)).item()
    assert got == pytest.approx(ref / 2, rel=1e-12)


def test_clothes_ce_paper_values() -> None:
    # Equal cosines -> log n. Cos (1, 0) on two classes -> -log(e^16 / (e^16 + 1)) = log(1 + e^-16) = 1.1254e-7.
    assert clothes_ce(torch.full((2, 4), 0.3), torch.tensor([0, 3])).item() == pytest.approx(math.log(4), rel=1e-6)
    got = clothes_ce(_t([[1.0, 0.0]]), torch.tensor([0])).item()
    assert got == pytest.approx(1.1253516e-7, rel=1e-6)


# ---------------------------------------------------------------- batch-hard triplet


def test_triplet_orthogonal_same_id_pairs() -> None:
    # Orthogonal unit vectors: every distinct pair has d = 1 - 0 = 1, so d_ap = 1 (the other positive),
    # d_an = 1 and each anchor gives max(0, 1 - 1 + 0.3) = 0.3.
    feats = torch.eye(4, dtype=torch.float64)
    assert batch_hard_triplet(feats, torch.tensor([0, 0, 1, 1])).item() == pytest.approx(0.3, abs=1e-12)


def test_triplet_orthogonal_singletons_use_self_as_positive() -> None:
    # Every id appears once: d_ap = d(self, self) = 0, d_an = 1, max(0, 0 - 1 + 0.3) = 0.
    feats = 3.0 * torch.eye(4, dtype=torch.float64)
    assert batch_hard_triplet(feats, torch.tensor([0, 1, 2, 3])).item() == pytest.approx(0.0, abs=1e-12)
    # Larger margin: max(0, 0 - 1 + 1.5) = 0.5 per anchor.
    assert batch_hard_triplet(feats, torch.tensor([0, 1, 2, 3]), margin=1.5).item() == pytest.approx(0.5, abs=1e-12)


def test_triplet_angles_paper_value() -> None:
    # Unit vectors at 0 deg and 60 deg (id 0) and 30 deg (id 1). d(0,60) = 1 - cos 60 = 0.5,
    # d(0,30) = d(60,30) = 1 - cos 30 = 0.1339746. Anchors 0 and 60: 0.5 - 0.1339746 + 0.3 = 0.6660254 each;
    # anchor 30: d_ap = 0 (self), 0 - 0.1339746 + 0.3 = 0.1660254. Mean = 1.4980762 / 3 = 0.4993587.
    ang = [0.0, 60.0, 30.0]
    feats = _t([[math.cos(math.radians(a)), math.sin(math.radians(a))] for a in ang])
    got = batch_hard_triplet(feats, torch.tensor([0, 0, 1])).item()
    assert got == pytest.approx(0.4993587, abs=1e-7)


def test_triplet_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(8, 5))
    pids = [0, 0, 1, 1, 2, 2, 3, 1]
    for margin in (0.3, 1.0):
        got = batch_hard_triplet(_t(feats), torch.tensor(pids), margin=margin).item()
        assert got == pytest.approx(_ref_triplet(feats, pids, margin), rel=1e-12)


def test_triplet_without_negatives_is_zero_and_finite_grad() -> None:
    feats = _t(np.random.default_rng(1).normal(size=(3, 4)), grad=True)
    loss = batch_hard_triplet(feats, torch.tensor([5, 5, 5]))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(feats.grad).all()


def test_triplet_gradcheck_and_local_mode() -> None:
    feats = _t(np.random.default_rng(2).normal(size=(6, 3)), grad=True)
    pids = torch.tensor([0, 0, 1, 1, 2, 2])
    assert torch.autograd.gradcheck(lambda x: batch_hard_triplet(x, pids, margin=0.5), (feats,))
    # Without torch.distributed, cross_replica has no effect.
    a = batch_hard_triplet(feats, pids, cross_replica=False)
    b = batch_hard_triplet(feats, pids)
    assert a.item() == b.item()
    with pytest.raises(ValueError, match="pids"):
        batch_hard_triplet(feats, pids[:3])


# ---------------------------------------------------------------- CAL adversarial


def test_pid2clothes_matrix_and_positive_mask() -> None:
    # 2 ids, 3 real outfits (id 0 wears 0 and 1, id 1 wears 2), synthetic block M = 2:
    # id 0 owns columns 3, 4 and id 1 owns 5, 6.
    m = pid2clothes_matrix([0, 0, 1, 0], [0, 1, 2, 1], num_pids=2, num_real_clothes=3, synthetic_block=2)
    expected = [[1, 1, 0, 1, 1, 0, 0], [0, 0, 1, 0, 0, 1, 1]]
    assert m.dtype == torch.bool and m.tolist() == [[bool(v) for v in r] for r in expected]
    mask = positive_clothes_mask(torch.tensor([1, 0, 1]), m)
    assert mask.tolist() == [m[1].tolist(), m[0].tolist(), m[1].tolist()]
    with pytest.raises(ValueError, match="clothes label 3"):
        pid2clothes_matrix([0], [3], num_pids=2, num_real_clothes=3)
    with pytest.raises(ValueError, match="pid 2"):
        pid2clothes_matrix([2], [0], num_pids=2, num_real_clothes=3)


def _cal_case() -> tuple[list[list[float]], list[int], list[list[bool]]]:
    cos = [[0.3, -0.1, 0.8, 0.05, -0.4], [0.6, 0.2, -0.3, 0.1, 0.0], [-0.2, 0.4, 0.4, 0.7, 0.2]]
    labels = [0, 3, 4]  # sample 1 wears a positive outfit other than its first; sample 2 a synthetic one
    pos = [
        [True, False, True, False, False],
        [False, True, False, True, True],
        [False, False, False, False, True],
    ]
    return cos, labels, pos


def test_cal_matches_hand_formula() -> None:
    cos, labels, pos = _cal_case()
    got = cal_adversarial_loss(_t(cos), torch.tensor(labels), torch.tensor(pos)).item()
    assert got == pytest.approx(_ref_cal(cos, labels, pos), rel=1e-12)
    got = cal_adversarial_loss(_t(cos), torch.tensor(labels), torch.tensor(pos), scale=4.0, epsilon=0.3).item()
    assert got == pytest.approx(_ref_cal(cos, labels, pos, s=4.0, eps=0.3), rel=1e-12)


def test_cal_paper_values() -> None:
    # |P_i| = 1 (P_i = {c_i}): t = 0.9 + 0.1 = 1 at c_i and log q = log softmax(z) -> plain CE(16 cos, c).
    cos = [[0.5, -0.2, 0.1], [0.0, 0.3, 0.9]]
    pos = torch.tensor([[True, False, False], [False, False, True]])
    got = cal_adversarial_loss(_t(cos), torch.tensor([0, 2]), pos).item()
    assert got == pytest.approx(clothes_ce(_t(cos), torch.tensor([0, 2])).item(), rel=1e-12)
    # Equal cosines, n = 5 classes, |P| = 2: log q_k = -log(3 negatives + 1) = -log 4, sum_k t_k = 1 -> log 4.
    pos = torch.tensor([[True, True, False, False, False]])
    assert cal_adversarial_loss(torch.full((1, 5), 0.2), torch.tensor([1]), pos).item() == pytest.approx(
        math.log(4), rel=1e-6
    )
    # Every class positive: no negatives, log q = 0, loss 0 with a finite gradient.
    cosv = _t([[0.1, 0.5, -0.3]], grad=True)
    loss = cal_adversarial_loss(cosv, torch.tensor([1]), torch.ones(1, 3, dtype=torch.bool))
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-12) and torch.isfinite(cosv.grad).all()


def test_cal_gradcheck_and_shapes() -> None:
    cos, labels, pos = _cal_case()
    x = _t(cos, grad=True)
    lab, pm = torch.tensor(labels), torch.tensor(pos)
    assert torch.autograd.gradcheck(lambda c: cal_adversarial_loss(c, lab, pm), (x,))
    with pytest.raises(ValueError, match="pos_mask"):
        cal_adversarial_loss(x, lab, pm[:, :4])


def test_cal_float32_large_logits_stable() -> None:
    cos = torch.tensor([[1.0, -1.0, 0.99, 1.0]] * 2) * 10  # z up to 160: naive exp overflows float32
    pos = torch.tensor([[True, False, True, False], [True, True, True, True]])
    loss = cal_adversarial_loss(cos, torch.tensor([0, 2]), pos)
    assert torch.isfinite(loss)
    ref = _ref_cal((cos.double() / 10).tolist(), [0, 2], pos.tolist(), s=160.0)
    assert loss.item() == pytest.approx(ref, rel=1e-5)


# ---------------------------------------------------------------- KL box

A = [[1.0, -0.5, 2.0], [0.0, 0.4, -1.2]]
B = [[0.3, 0.3, 1.0], [-1.0, 2.0, 0.5]]


def test_kl_paper_and_official_match_hand_formula() -> None:
    n, k, tau = 2, 3, 0.8
    s = _ref_kl_sum(A, B, tau)
    assert kl_divergence(_t(A), _t(B), tau, "paper").item() == pytest.approx(s / n, rel=1e-12)
    official = kl_divergence(_t(A), _t(B), tau, "official").item()
    assert official == pytest.approx(0.64 * tau * tau * s / (n * k), rel=1e-12)
    # docs/method.md §4: official = (0.4096 / K) x batch-mean KL at tau = 0.8.
    assert official == pytest.approx(0.4096 / k * (s / n), rel=1e-12)
    assert OFFICIAL_KL_LAMBDA == 0.64
    # Other temperature: same hand formula.
    assert kl_divergence(_t(A), _t(B), 2.0, "paper").item() == pytest.approx(_ref_kl_sum(A, B, 2.0) / n, rel=1e-12)


def test_kl_paper_value_two_classes() -> None:
    # a = (0, 0) -> p = (1/2, 1/2); b = (0, 0.8 ln 3) -> q = softmax(0, ln 3) = (1/4, 3/4) at tau = 0.8.
    # KL = 1/2 ln 2 + 1/2 ln(2/3) = 1/2 ln(4/3) = 0.1438410; official = 0.4096/2 * that = 0.0294586.
    a, b = _t([[0.0, 0.0]]), _t([[0.0, 0.8 * math.log(3)]])
    assert kl_divergence(a, b, weighting="paper").item() == pytest.approx(0.1438410, abs=1e-7)
    assert kl_divergence(a, b).item() == pytest.approx(0.0294586, abs=1e-7)
    assert kl_divergence(b, b).item() == pytest.approx(0.0, abs=1e-15)


def test_kl_gradients_reach_both_arguments() -> None:
    a, b = _t(A, grad=True), _t(B, grad=True)
    kl_divergence(a, b).backward()
    assert a.grad is not None and b.grad is not None
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0
    for w in ("official", "paper"):
        assert torch.autograd.gradcheck(lambda x, y, w=w: kl_divergence(x, y, 0.8, w), (_t(A, grad=True), _t(B, grad=True)))
    with pytest.raises(ConfigError, match="weighting"):
        kl_divergence(a, b, weighting="mean")


# ---------------------------------------------------------------- |cos|


def test_abs_cos_hand_values() -> None:
    # cos = 1/sqrt2, -1/sqrt2, 0 -> mean |cos| = sqrt2/3 = 0.4714045; mean ReLU(cos) = 1/(3 sqrt2) = 0.2357023.
    fa = _t([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    fb = _t([[1.0, 1.0], [-1.0, 1.0], [3.0, 0.0]])
    assert abs_cos_loss(fa, fb).item() == pytest.approx(math.sqrt(2) / 3, rel=1e-12)
    assert abs_cos_loss(fa, fb, variant="relu").item() == pytest.approx(1 / (3 * math.sqrt(2)), rel=1e-12)
    with pytest.raises(ConfigError, match="variant"):
        abs_cos_loss(fa, fb, variant="square")


def test_abs_cos_matches_numpy_and_grads_both() -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(size=(4, 6))
    # Mixed signs keep |cos| and ReLU(cos) different, and the rows away from cos = 0.
    b = np.array([[1.0], [-1.0], [1.0], [-1.0]]) * a + 0.7 * rng.normal(size=(4, 6))
    ref_abs = np.mean([abs(_ref_cos(x, y)) for x, y in zip(a, b)])
    ref_relu = np.mean([max(0.0, _ref_cos(x, y)) for x, y in zip(a, b)])
    ta, tb = _t(a, grad=True), _t(b, grad=True)
    loss = abs_cos_loss(ta, tb)
    assert loss.item() == pytest.approx(ref_abs, rel=1e-12)
    assert abs_cos_loss(ta, tb, variant="relu").item() == pytest.approx(ref_relu, rel=1e-12)
    loss.backward()
    assert ta.grad.abs().sum() > 0 and tb.grad.abs().sum() > 0
    # Away from cos = 0 the loss is smooth.
    assert all(abs(_ref_cos(x, y)) > 0.05 for x, y in zip(a, b))
    assert torch.autograd.gradcheck(lambda x, y: abs_cos_loss(x, y), (_t(a, grad=True), _t(b, grad=True)))


# ---------------------------------------------------------------- distillation and SS_MSE


def test_distillation_identical_opposite_orthogonal() -> None:
    # ||n(x) - n(y)||^2 = 2 - 2 cos: identical 0, orthogonal 2, opposite 4 (per term).
    x = _t([[1.0, 2.0, -1.0], [0.5, 0.0, 3.0]])
    orth = _t([[2.0, -1.0, 0.0], [3.0, 1.0, -0.5]])
    assert distillation_loss([x], [3 * x]).item() == pytest.approx(0.0, abs=1e-12)
    assert distillation_loss([x], [-x]).item() == pytest.approx(4.0, rel=1e-12)
    assert distillation_loss([x], [orth]).item() == pytest.approx(2.0, rel=1e-12)
    # TAD: 4 terms. All opposite -> 16; CAL identical + BOT opposite -> 0 + 0 + 4 + 4 = 8.
    assert tad_distillation(x, x, -x, -x, -x, -x).item() == pytest.approx(16.0, rel=1e-12)
    assert tad_distillation(x, x, x, 2 * x, -x, -x).item() == pytest.approx(8.0, rel=1e-12)


def test_distillation_matches_numpy_and_pairs_order() -> None:
    rng = np.random.default_rng(4)
    t_cal, t_bot, s1, s2, s3, s4 = (rng.normal(size=(3, 5)) for _ in range(6))
    ref = _ref_sqdist(t_cal, s1) + _ref_sqdist(t_cal, s2) + _ref_sqdist(t_bot, s3) + _ref_sqdist(t_bot, s4)
    got = tad_distillation(*(_t(v) for v in (t_cal, t_bot, s1, s2, s3, s4))).item()
    assert got == pytest.approx(ref, rel=1e-12)
    for v in (s1, s2, s3, s4):
        assert 0.0 <= _ref_sqdist(t_cal, v) <= 4.0
    with pytest.raises(ValueError, match="same non-zero number"):
        distillation_loss([_t(t_cal)], [])


def test_distillation_teacher_gets_no_gradient() -> None:
    rng = np.random.default_rng(5)
    t = _t(rng.normal(size=(3, 4)), grad=True)
    s = _t(rng.normal(size=(3, 4)), grad=True)
    distillation_loss([t, t], [s, 2 * s]).backward()
    assert t.grad is None
    assert s.grad is not None and s.grad.abs().sum() > 0
    tt = _t(rng.normal(size=(3, 4)))
    assert torch.autograd.gradcheck(lambda x: distillation_loss([tt], [x]), (_t(rng.normal(size=(3, 4)), grad=True),))


def test_ss_mse_hand_and_grads_both() -> None:
    hq = _t([[1.0, 0.0], [0.0, 5.0]], grad=True)
    lq = _t([[0.0, 2.0], [0.0, 1.0]], grad=True)
    # Row 0 orthogonal (2), row 1 same direction (0): mean = 1.
    loss = ss_mse(hq, lq)
    assert loss.item() == pytest.approx(1.0, rel=1e-12)
    loss.backward()
    assert hq.grad.abs().sum() > 0 and lq.grad.abs().sum() > 0
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    assert ss_mse(_t(a), _t(b)).item() == pytest.approx(_ref_sqdist(a, b), rel=1e-12)
    assert torch.autograd.gradcheck(ss_mse, (_t(a, grad=True), _t(b, grad=True)))
