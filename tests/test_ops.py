"""Numerics of DreamerV3 against hand-computed values (DESIGN §4)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reverie.nn import maths as ops


def test_symlog_values_and_inverse():
    x = torch.tensor([-10.0, -1.0, 0.0, 0.5, 1000.0])
    expected = torch.tensor([-math.log(11), -math.log(2), 0.0, math.log(1.5), math.log(1001)])
    assert torch.allclose(ops.symlog(x), expected)
    assert torch.allclose(ops.symexp(ops.symlog(x)), x, rtol=1e-5)


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False))
def test_symexp_inverts_symlog(value):
    x = torch.tensor([value], dtype=torch.float64)
    assert torch.allclose(ops.symexp(ops.symlog(x)), x, rtol=1e-9, atol=1e-9)


def test_bins_symmetric_and_spanning():
    bins = ops.symexp_bins(255)
    assert bins.shape == (255,)
    assert bins[127] == 0.0
    assert torch.equal(bins, -bins.flip(0))
    assert torch.isclose(bins[-1], torch.tensor(math.expm1(20.0)), rtol=1e-6)
    assert torch.all(bins[1:] > bins[:-1])


def test_twohot_weights_by_hand():
    bins = torch.tensor([-1.0, 0.0, 1.0, 2.0])
    # y = 0.25 lies between b_1 = 0 and b_2 = 1: w_1 = |1 − 0.25| / 1 = 0.75, w_2 = |0 − 0.25| / 1 = 0.25.
    probs = ops.twohot_encode(torch.tensor([0.25]), bins)
    assert torch.allclose(probs, torch.tensor([[0.0, 0.75, 0.25, 0.0]]))
    # Exactly on a bin: all weight on it. Outside the range: all weight on the end bin.
    probs = ops.twohot_encode(torch.tensor([1.0, -5.0, 7.0]), bins)
    assert torch.allclose(probs, torch.tensor([[0, 0, 1.0, 0], [1.0, 0, 0, 0], [0, 0, 0, 1.0]]))


def test_twohot_round_trip():
    bins = ops.symexp_bins(255)
    targets = torch.tensor([-12345.6, -3.3, -0.01, 0.0, 0.7, 1.0, 42.0, 1e6])
    decoded = ops.twohot_mean(ops.twohot_encode(targets, bins), bins)
    assert torch.allclose(decoded, targets, rtol=1e-5, atol=1e-6)


def test_twohot_zero_logits_predict_exactly_zero():
    bins = ops.symexp_bins(255)
    probs = torch.softmax(torch.zeros(3, 255), -1)
    assert torch.equal(ops.twohot_mean(probs, bins), torch.zeros(3))
    even = ops.symexp_bins(256)
    assert torch.equal(ops.twohot_mean(torch.softmax(torch.zeros(256), -1), even), torch.tensor(0.0))


def test_lambda_return_three_steps_by_hand():
    # γc = 0.5 everywhere, λ = 0.5, values v = [10, 20, 30, 40], rewards r = [0, 1, 2, 3].
    # R_3 = v_3 = 40
    # R_2 = r_3 + 0.5·(0.5·v_3 + 0.5·R_3) = 3 + 0.5·(20 + 20)     = 23
    # R_1 = r_2 + 0.5·(0.5·v_2 + 0.5·R_2) = 2 + 0.5·(15 + 11.5)   = 15.25
    # R_0 = r_1 + 0.5·(0.5·v_1 + 0.5·R_1) = 1 + 0.5·(10 + 7.625)  = 9.8125
    reward = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    live = torch.full((1, 4), 0.5)
    lam = torch.full((1, 4), 0.5)
    value = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    ret = ops.lambda_return(reward, live, lam, value)
    assert torch.allclose(ret, torch.tensor([[9.8125, 15.25, 23.0]]))


def test_lambda_return_episode_end_cuts_bootstrap():
    # A terminal at t = 1 (live_1 = 0): R_0 = r_1 only, whatever follows.
    reward = torch.tensor([[0.0, 5.0, 100.0]])
    live = torch.tensor([[1.0, 0.0, 1.0]])
    cont = torch.full((1, 3), 0.95)
    value = torch.tensor([[1.0, 1000.0, 1000.0]])
    assert ops.lambda_return(reward, live, cont, value)[0, 0] == 5.0


def test_return_normalizer_percentiles_by_hand():
    norm = ops.ReturnNormalizer(rate=0.5, limit=1.0, lo=5.0, hi=95.0)
    returns = torch.arange(101, dtype=torch.float32)  # P5 = 5, P95 = 95
    norm.update(returns)  # low = 0.5·5 = 2.5, high = 0.5·95 = 47.5
    offset, scale = norm.stats()
    assert torch.isclose(offset, torch.tensor(2.5)) and torch.isclose(scale, torch.tensor(45.0))
    norm.update(returns)  # low = 3.75, high = 71.25
    assert torch.isclose(norm.stats()[1], torch.tensor(67.5))


def test_return_normalizer_limit_keeps_small_returns_unscaled():
    norm = ops.ReturnNormalizer(rate=1.0, limit=1.0)
    norm.update(torch.linspace(0, 0.1, 50))
    assert norm.stats()[1] == 1.0


@pytest.mark.parametrize("value", [1e30, -1e30, 3e38, 0.0])
def test_extreme_values_stay_finite(value):
    x = torch.tensor([value])
    assert torch.isfinite(ops.symlog(x)).all()
    bins = ops.symexp_bins(255)
    probs = ops.twohot_encode(x, bins)
    assert torch.isfinite(probs).all() and torch.isclose(probs.sum(), torch.tensor(1.0))


def test_rms_norm_matches_torch_and_its_backward_is_the_true_gradient():
    torch.manual_seed(0)
    x = torch.randn(50, 24, dtype=torch.float64, requires_grad=True)
    w = (torch.rand(24, dtype=torch.float64) + 0.5).requires_grad_()
    y = ops.rms_norm(x, w, 1e-4)
    torch.testing.assert_close(y, torch.nn.functional.rms_norm(x, (24,), w, 1e-4))
    assert torch.autograd.gradcheck(lambda a, b: ops.rms_norm(a, b, 1e-4), (x, w))


@pytest.mark.parametrize("shape", [(64, 32, 4), (7, 2), (16, 32, 32), (5, 255)])
@pytest.mark.parametrize("log", [False, True])
def test_softmax_matches_torch_with_gradients(shape, log):
    """The transposed-view path (fewer than 16 classes) and the direct one give torch's values and gradients."""
    torch.manual_seed(0)
    x = torch.randn(*shape, requires_grad=True)
    weights = torch.randn(*shape)
    ours = ops.softmax(x, log=log)
    (grad,) = torch.autograd.grad((ours * weights).sum(), x)
    reference = (torch.log_softmax if log else torch.softmax)(x, -1)
    (grad_ref,) = torch.autograd.grad((reference * weights).sum(), x)
    assert ours.shape == reference.shape
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(grad, grad_ref)


def test_twohot_cross_entropy_is_the_dense_cross_entropy_with_the_true_gradient():
    """Two targets per row (one outside the bins), scaled: loss and gradient equal Σ_i s_i·CE of the
    dense two-hot encodings, and the hand-written backward passes gradcheck."""
    torch.manual_seed(0)
    bins = ops.symexp_bins(15).double()
    logits = torch.randn(6, 5, 15, dtype=torch.float64, requires_grad=True)
    first = torch.randn(6, 5, dtype=torch.float64) * 30
    second = torch.full((6, 5), 1e9, dtype=torch.float64)  # beyond the last bin: all weight on it
    ours = ops.twohot_cross_entropy(logits.double(), [first, second], bins, [1.0, 0.3])
    logp = torch.log_softmax(logits, -1)
    dense = sum(s * -(ops.twohot_encode(t, bins) * logp).sum(-1) for t, s in [(first, 1.0), (second, 0.3)])
    # twohot_cross_entropy computes in float32, the reference in float64
    torch.testing.assert_close(ours.double(), dense, rtol=1e-5, atol=1e-5)
    (grad,) = torch.autograd.grad(ours.sum(), logits)
    (grad_ref,) = torch.autograd.grad(dense.sum(), logits)
    torch.testing.assert_close(grad.double(), grad_ref, rtol=1e-5, atol=1e-5)
    index = torch.randint(0, 15, (4, 3))
    weight = torch.rand(4, 3, dtype=torch.float64)
    x = torch.randn(4, 15, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: ops._TwoHotCrossEntropy.apply(a, index, weight), (x,))
