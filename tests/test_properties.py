"""Property-based tests (hypothesis): the config parser turns any input into a value or one
ConfigError naming the key, and the numerics (symlog, two-hot, return normalisation) stay finite
for inputs up to ±1e30."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from reverie import config as C
from reverie import ops
from reverie.distributions import TwoHot
from reverie.errors import ConfigError

LEAVES = C.leaf_paths(C.Config())
KEYS_BY_TYPE = {kind: sorted(k for k, t in LEAVES.items() if t is kind) for kind in (int, float, bool, str)}
FREE_FLOATS = sorted(k for k in KEYS_BY_TYPE[float] if k.startswith("loss_scales."))  # no cross-field rules
LIMIT = float(torch.tensor(1e30, dtype=torch.float32))  # 1e30 rounded to float32
HUGE = st.floats(min_value=-LIMIT, max_value=LIMIT, allow_nan=False, width=32)
SETTINGS = settings(max_examples=150, deadline=None)


# ------------------------------------------------------------------------------------------ config

@SETTINGS
@given(key=st.sampled_from(FREE_FLOATS), value=st.floats(min_value=-1e6, max_value=1e6, allow_nan=False))
def test_float_overrides_round_trip_through_the_parser_and_the_saved_file(key, value, tmp_path_factory):
    cfg = C.make_config([], [f"{key}={value!r}"])
    assert C.get(cfg, key) == value
    path = tmp_path_factory.mktemp("cfg") / "config.yaml"
    C.save(cfg, path)
    assert C.to_dict(C.load(path)) == C.to_dict(cfg)


@SETTINGS
@given(key=st.sampled_from(KEYS_BY_TYPE[float]), value=st.sampled_from(["nan", "inf", "-inf", "NaN", "1e999"]))
def test_non_finite_floats_are_refused_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=f"config key '{key}'"):
        C.make_config([], [f"{key}={value}"])


@SETTINGS
@given(key=st.sampled_from(KEYS_BY_TYPE[int] + KEYS_BY_TYPE[float] + KEYS_BY_TYPE[bool]), value=st.text(max_size=12))
def test_any_text_for_a_typed_key_is_a_value_or_one_config_error(key, value):
    assume("\n" not in value and "\r" not in value)
    try:
        cfg = C.make_config([], [f"{key}={value}"])
    except ConfigError as error:
        assert key in str(error) or "must be" in str(error)  # a type error names the key; a rule names it too
        return
    parsed = C.get(cfg, key)
    assert isinstance(parsed, LEAVES[key])
    if LEAVES[key] is bool:
        assert value.strip().lower() in {"true", "yes", "on", "1", "false", "no", "off", "0"}
    else:
        assert math.isfinite(parsed) and parsed == float(value)


@SETTINGS
@given(key=st.sampled_from(KEYS_BY_TYPE[int]), value=st.floats(allow_nan=False, allow_infinity=False)
       .filter(lambda v: not v.is_integer()))
def test_a_fractional_value_for_an_int_key_is_refused(key, value):
    with pytest.raises(ConfigError, match=f"config key '{key}' expects int"):
        C.make_config([], [f"{key}={value!r}"])


@SETTINGS
@given(st.text(min_size=1, max_size=30).filter(lambda s: "=" not in s))
def test_an_override_without_equals_sign_is_refused(item):
    with pytest.raises(ConfigError, match="is not of the form key=value"):
        C.parse_overrides([item])


# ------------------------------------------------------------------------------------------ numerics

@SETTINGS
@given(x=HUGE, y=HUGE)
def test_symlog_is_finite_odd_monotone_and_inverted_by_symexp(x, y):
    a, b = torch.tensor([x, y]), torch.tensor([-x, -y])
    out = ops.symlog(a)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(ops.symlog(b), -out)
    if x < y:
        assert out[0] <= out[1]
    torch.testing.assert_close(ops.symexp(out), a, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("space", ["symexp", "symlog"])
@SETTINGS
@given(targets=st.lists(HUGE, min_size=1, max_size=8))
def test_twohot_encoding_is_a_finite_distribution_on_two_neighbours_that_decodes_to_the_clipped_target(space, targets):
    bins = ops.symexp_bins(255) if space == "symexp" else torch.linspace(-20.0, 20.0, 255)
    target = torch.tensor(targets)
    y = ops.symlog(target) if space == "symlog" else target
    probs = ops.twohot_encode(y, bins)  # (n, 255)
    assert torch.isfinite(probs).all() and (probs >= 0).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(len(targets)))
    support = [torch.nonzero(row).flatten().tolist() for row in probs]
    assert all(len(s) <= 2 and (len(s) < 2 or s[1] == s[0] + 1) for s in support)
    decoded = (probs.double() * bins.double()).sum(-1)
    clipped = y.double().clamp(float(bins[0]), float(bins[-1]))
    torch.testing.assert_close(decoded, clipped, rtol=1e-5, atol=1e-5)


@SETTINGS
@given(targets=st.lists(HUGE, min_size=1, max_size=8), scale=st.floats(min_value=0.0, max_value=1e3))
def test_twohot_loss_and_mean_are_finite_for_any_target(targets, scale):
    torch.manual_seed(0)
    logits = scale * torch.randn(len(targets), 255)
    for dist in (TwoHot(logits, ops.symexp_bins(255)), TwoHot(logits, torch.linspace(-20, 20, 255), symlog=True)):
        loss = dist.loss(torch.tensor(targets))
        assert torch.isfinite(loss).all() and (loss >= 0).all()
        assert torch.isfinite(dist.mean()).all()


@SETTINGS
@given(batches=st.lists(st.lists(HUGE, min_size=2, max_size=16), min_size=1, max_size=5))
def test_return_normalisation_stays_finite_for_returns_up_to_1e30(batches):
    norm = ops.ReturnNormalizer()
    for returns in batches:
        ret = torch.tensor(returns)
        norm.update(ret)
        offset, scale = norm.stats()
        assert torch.isfinite(offset) and torch.isfinite(scale) and scale >= 1.0
        adv = (ret - ret.flip(0)) / scale
        assert torch.isfinite(adv).all()
