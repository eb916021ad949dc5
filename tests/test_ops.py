"""Numerics of DreamerV3 against hand-computed values (DESIGN §4)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reverie.nn import maths as ops
from reference_maths import twohot_encode


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
    probs = twohot_encode(torch.tensor([0.25]), bins)
    assert torch.allclose(probs, torch.tensor([[0.0, 0.75, 0.25, 0.0]]))
    # Exactly on a bin: all weight on it. Outside the range: all weight on the end bin.
    probs = twohot_encode(torch.tensor([1.0, -5.0, 7.0]), bins)
    assert torch.allclose(probs, torch.tensor([[0, 0, 1.0, 0], [1.0, 0, 0, 0], [0, 0, 0, 1.0]]))


def test_twohot_round_trip():
    bins = ops.symexp_bins(255)
    targets = torch.tensor([-12345.6, -3.3, -0.01, 0.0, 0.7, 1.0, 42.0, 1e6])
    decoded = ops.twohot_mean(twohot_encode(targets, bins), bins)
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
    probs = twohot_encode(x, bins)
    assert torch.isfinite(probs).all() and torch.isclose(probs.sum(), torch.tensor(1.0))
