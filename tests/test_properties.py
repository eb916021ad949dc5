"""Property-based tests (hypothesis).

Config parser: a valid value for a known key is what the resolved config (and its saved copy)
holds; an unknown key, a value of the wrong type or a malformed override is one `ConfigError`
naming the key, never another exception. Numerics: symlog/symexp, two-hot encoding and loss, and
the percentile return normaliser stay finite and exact enough for float32 inputs up to ±1e30.
"""

from __future__ import annotations

import math
import re

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from reference_maths import twohot_encode

from reverie import api
from reverie import config as C
from reverie.errors import ConfigError
from reverie.nn import maths as ops
from reverie.nn.distributions import TwoHot

SETTINGS = settings(max_examples=150, deadline=None)
ROUND_TRIP = settings(max_examples=100, deadline=None)  # each example writes and parses a YAML file

LEAVES = C.leaf_paths(C.Config())
KEYS_BY_TYPE = {kind: sorted(k for k, t in LEAVES.items() if t is kind) for kind in (int, float, bool, str)}
TUPLE_KEYS = sorted(k for k, t in LEAVES.items() if getattr(t, "__origin__", None) is tuple)
# Keys whose value only the type constrains (no rule in `config.validate`, or one that `fit_rules` meets).
FREE_INTS = [k for k in KEYS_BY_TYPE[int] if k != "model.rssm.blocks"]  # `fit_rules` handles the others
# run.train_ratio must be > 0; muzero.reanalyse is a fraction of the batch in [0, 1] (tested on its own below).
FREE_FLOATS = [k for k in KEYS_BY_TYPE[float] if k not in ("run.train_ratio", "muzero.reanalyse")]
# run.device is checked against the device names (auto, cpu, cuda, cuda:N, mps): not free text.
FREE_STRS = ["logdir", "env.id", "model.act", "model.encoder.mlp_keys", "model.decoder.cnn_keys"]
BOOL_WORDS = sorted({"true", "yes", "on", "1"} | {"false", "no", "off", "0"})  # case-insensitive

IDENT = r"[A-Za-z_][A-Za-z0-9_]{0,10}"
DOTTED = st.from_regex(rf"{IDENT}(\.{IDENT}){{0,3}}", fullmatch=True)
NON_LEAF = sorted({p.rsplit(".", n)[0] for p in LEAVES for n in (1, 2) if p.count(".") >= n})


def fit_rules(key: str, value: int) -> int:
    """`value` (≥ 64) moved to the nearest value that the cross-field rules allow with the defaults."""
    if key == "model.rssm.deter":
        return value - value % 8  # divisible by the default 8 blocks
    defaults = C.Config()
    if key == "batch_length":  # capacity ≥ batch_length + replay.context
        return min(value, defaults.replay.capacity - defaults.replay.context)
    if key == "replay.context":
        return min(value, defaults.replay.capacity - defaults.batch_length)
    return value


def make(item: str) -> C.Config:
    """The config that one command-line override gives (no presets)."""
    return C.make_config([], [item])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A file path for save/load round trips (module-scoped: hypothesis reruns the test body)."""
    return tmp_path_factory.mktemp("cfg") / "config.yaml"


def round_trips(cfg: C.Config, path) -> bool:
    """`config.save` then `config.load` gives an equal config."""
    C.save(cfg, path)
    return C.load(path) == cfg


@st.composite
def bool_spellings(draw):
    """(text, value): an accepted spelling of a bool in random case."""
    word = draw(st.sampled_from(BOOL_WORDS))
    upper = draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
    return "".join(c.upper() if u else c for c, u in zip(word, upper)), word in {"true", "yes", "on", "1"}


# ------------------------------------------------------------------------------ config: valid values

@ROUND_TRIP
@given(key=st.sampled_from(FREE_INTS), value=st.integers(min_value=64, max_value=2**53), data=st.data())
def test_int_overrides_in_any_accepted_spelling_round_trip(key, value, data, saved):
    value = fit_rules(key, value)
    text = data.draw(st.sampled_from([str(value), repr(float(value)), f"{value:.17e}", f" {value} "]))
    cfg = make(f"{key}={text}")
    assert C.get(cfg, key) == value and type(C.get(cfg, key)) is int
    assert C.get(C.make_config([], {key: value}), key) == value  # a YAML/Python int
    assert round_trips(cfg, saved)


@ROUND_TRIP
@given(key=st.sampled_from(FREE_FLOATS), value=st.floats(allow_nan=False, allow_infinity=False))
def test_float_overrides_round_trip_through_the_parser_and_the_saved_file(key, value, saved):
    cfg = make(f"{key}={value!r}")
    assert C.get(cfg, key) == value and type(C.get(cfg, key)) is float
    assert round_trips(cfg, saved)


@ROUND_TRIP
@given(value=st.one_of(st.floats(min_value=0, max_value=1), st.floats(allow_nan=False, allow_infinity=False)))
def test_a_fraction_key_accepts_exactly_the_unit_interval(value, saved):
    if 0 <= value <= 1:
        cfg = make(f"muzero.reanalyse={value!r}")
        assert cfg.muzero.reanalyse == value and round_trips(cfg, saved)
    else:
        with pytest.raises(ConfigError, match=r"muzero\.reanalyse .*\[0, 1\]"):
            make(f"muzero.reanalyse={value!r}")


@ROUND_TRIP
@given(key=st.sampled_from(KEYS_BY_TYPE[bool]), spelling=bool_spellings())
def test_bool_overrides_accept_yaml_style_words_in_any_case(key, spelling, saved):
    text, value = spelling
    cfg = make(f"{key}={text}")
    assert C.get(cfg, key) is value
    assert C.get(C.make_config([], {key: value}), key) is value
    assert round_trips(cfg, saved)


@ROUND_TRIP
@given(key=st.sampled_from(FREE_STRS), value=st.text(max_size=20))
def test_string_overrides_are_kept_verbatim_and_survive_the_saved_yaml(key, value, saved):
    cfg = make(f"{key}={value}")  # everything after the first '=' is the value, '=' included
    assert C.get(cfg, key) == value
    assert round_trips(cfg, saved)


@ROUND_TRIP
@given(
    key=st.sampled_from(TUPLE_KEYS),
    items=st.lists(st.integers(min_value=8, max_value=4096), min_size=1, max_size=6),
    form=st.sampled_from(["[{}]", "{}", "[ {} ]"]),
    sep=st.sampled_from([",", ", "]),
)
def test_list_overrides_give_tuples(key, items, form, sep, saved):
    if key == "env.size":
        items = (items * 2)[:2]  # exactly (height, width)
    cfg = make(f"{key}={form.format(sep.join(map(str, items)))}")
    assert C.get(cfg, key) == tuple(items)
    assert C.get(C.make_config([], {key: items}), key) == tuple(items)  # a YAML list
    assert round_trips(cfg, saved)


@settings(max_examples=60, deadline=None)  # builds from the default presets each time
@given(
    key=st.sampled_from([k for k in FREE_INTS + FREE_FLOATS if k not in ("seed", "run.steps")]),
    number=st.integers(min_value=64, max_value=10**6),
    seed=st.integers(min_value=-(2**63), max_value=2**63),
    steps=st.integers(min_value=1, max_value=10**9),
)
def test_build_config_applies_overrides_after_the_presets(key, number, seed, steps):
    number = fit_rules(key, number)
    cfg = api.build_config("CartPole-v1", overrides=[f"{key}={number}"], seed=seed, steps=steps)
    assert C.get(cfg, key) == number
    assert (cfg.seed, cfg.run.steps, cfg.env.id) == (seed, steps, "CartPole-v1")


# ------------------------------------------------------------------------------ config: errors

def raises_naming(key: str, kind: str = "config key"):
    return pytest.raises(ConfigError, match=f"{kind} '{re.escape(key)}'")


@SETTINGS
@given(
    key=st.one_of(
        DOTTED,  # a random identifier path
        st.builds(lambda p, s: f"{p}.{s}", st.sampled_from(sorted(LEAVES)), DOTTED),  # below a leaf
        st.sampled_from(NON_LEAF),  # a section, not a leaf
    ).filter(lambda k: k not in LEAVES),
    how=st.sampled_from(["cli", "dict", "build_config"]),
)
def test_an_unknown_key_is_a_config_error_naming_it(key, how):
    with raises_naming(key, "unknown config key"):
        if how == "cli":
            make(f"{key}=1")
        elif how == "dict":
            C.make_config([], {key: 1})
        else:
            api.build_config("CartPole-v1", overrides=[f"{key}=1"])


@SETTINGS
@given(
    key=st.sampled_from(KEYS_BY_TYPE[int] + KEYS_BY_TYPE[float] + TUPLE_KEYS),
    value=st.text(alphabet="abcdefghijklmnopqrstuvwxyzINF", min_size=1, max_size=12),
)
def test_a_word_for_a_numeric_key_is_refused_naming_the_key(key, value):
    with raises_naming(key):  # nan, inf and infinity included: a float must be finite
        make(f"{key}={value}")


@SETTINGS
@given(key=st.sampled_from(KEYS_BY_TYPE[int]), value=st.floats(allow_nan=False, allow_infinity=False)
       .filter(lambda v: not v.is_integer()))
def test_a_fractional_value_for_an_int_key_is_refused(key, value):
    with raises_naming(key):
        make(f"{key}={value!r}")
    with raises_naming(key):
        C.make_config([], {key: value})


@SETTINGS
@given(key=st.sampled_from(KEYS_BY_TYPE[float]), value=st.sampled_from(["nan", "inf", "-inf", "NaN", "1e999"]))
def test_non_finite_floats_are_refused_naming_the_key(key, value):
    with raises_naming(key):
        make(f"{key}={value}")


@SETTINGS
@given(
    key=st.sampled_from(KEYS_BY_TYPE[bool]),
    value=st.sampled_from(["y", "n", "t", "f", "2", "-1", "1.0", "none", "null", "~", "", " true", "yes!"])
    | st.text(max_size=8),
)
def test_a_bool_key_takes_only_the_listed_words(key, value):
    assume(value.lower() not in BOOL_WORDS)
    with raises_naming(key):
        make(f"{key}={value}")


# Python values of the wrong type, as a YAML file or the Python API's dict of overrides gives them.
WRONG_PYTHON_VALUES = {
    int: st.none() | st.booleans() | st.lists(st.integers(), max_size=2)
    | st.floats().filter(lambda v: not v.is_integer()),
    float: st.none() | st.booleans() | st.lists(st.floats(), max_size=2)
    | st.integers(min_value=2**1024, max_value=2**1100),  # too large for a float
    bool: st.none() | st.floats() | st.lists(st.booleans(), max_size=2),
    str: st.none() | st.booleans() | st.integers() | st.floats() | st.lists(st.text(), max_size=2),
    tuple: st.none() | st.booleans() | st.integers() | st.floats(),
}


@SETTINGS
@given(key=st.sampled_from(sorted(LEAVES)), data=st.data())
def test_a_python_value_of_the_wrong_type_is_refused_naming_the_key(key, data):
    kind = LEAVES[key] if LEAVES[key] in WRONG_PYTHON_VALUES else tuple
    value = data.draw(WRONG_PYTHON_VALUES[kind])
    with raises_naming(key):
        C.make_config([], {key: value})


@SETTINGS
@given(st.text(min_size=1, max_size=30).filter(lambda s: "=" not in s))
def test_an_override_without_equals_sign_is_refused(item):
    with pytest.raises(ConfigError, match="is not of the form key=value"):
        C.parse_overrides([item])
    with pytest.raises(ConfigError, match="is not of the form key=value"):
        api.build_config("CartPole-v1", overrides=[item])


@SETTINGS
@given(blank=st.text(alphabet=" \t", max_size=3), value=st.text(max_size=10))
def test_an_override_with_an_empty_key_is_refused(blank, value):
    with raises_naming("", "unknown config key"):
        make(f"{blank}={value}")


@SETTINGS
@given(deter=st.integers(min_value=1, max_value=4096), blocks=st.integers(min_value=-16, max_value=64))
def test_the_block_rule_is_a_config_error_for_any_block_count(deter, blocks):
    items = [f"model.rssm.deter={deter}", f"model.rssm.blocks={blocks}"]
    if blocks >= 1 and deter % blocks == 0:
        assert C.make_config([], items).model.rssm.blocks == blocks
    else:  # blocks=0 included: a rule, not a ZeroDivisionError
        with pytest.raises(ConfigError, match=r"model\.rssm\.blocks"):
            C.make_config([], items)


@SETTINGS
@given(key=st.sampled_from(KEYS_BY_TYPE[int] + KEYS_BY_TYPE[float] + KEYS_BY_TYPE[bool]), value=st.text(max_size=12))
def test_any_text_for_a_typed_key_is_a_value_or_one_config_error(key, value):
    try:
        cfg = make(f"{key}={value}")
    except ConfigError as error:
        assert key in str(error)  # a type error names the key; so does every cross-field rule
        return
    parsed = C.get(cfg, key)
    assert type(parsed) is LEAVES[key]
    if LEAVES[key] is bool:
        assert value.lower() in BOOL_WORDS
    else:
        assert math.isfinite(parsed) and parsed == float(value)


# ------------------------------------------------------------------------------ numerics

LIMIT = float(np.float32(1e30))  # 1e30 rounded to float32
HUGE = st.floats(min_value=-LIMIT, max_value=LIMIT, allow_nan=False, width=32)
VECTORS = hnp.arrays(np.float32, st.integers(1, 32), elements=HUGE)
BINS = {"symexp": ops.symexp_bins(255), "symlog": torch.linspace(-20.0, 20.0, 255)}
MAX_BIN = float(BINS["symexp"][-1])  # symexp(20) ≈ 4.85e8


@SETTINGS
@given(x=VECTORS)
def test_symlog_is_finite_odd_monotone_and_inverted_by_symexp(x):
    x = torch.from_numpy(x)
    y = ops.symlog(x)
    assert torch.isfinite(y).all()
    assert torch.equal(ops.symlog(-x), -y)
    order = torch.argsort(x)
    assert (ops.symlog(x[order]).diff() >= 0).all()
    back = ops.symexp(y)
    assert torch.isfinite(back).all()
    torch.testing.assert_close(back, x, rtol=1e-5, atol=1e-30)


@SETTINGS
@given(x=hnp.arrays(np.float32, st.integers(1, 32), elements=st.floats(-88.0, 88.0, width=32)))
def test_symexp_is_finite_odd_and_monotone_where_float32_can_hold_it(x):
    x = torch.from_numpy(x)  # exp(88.72) is float32's largest; symlog never exceeds ln(1 + 3.4e38)
    y = ops.symexp(x)
    assert torch.isfinite(y).all()
    assert torch.equal(ops.symexp(-x), -y)
    assert (ops.symexp(x[torch.argsort(x)]).diff() >= 0).all()
    inside = y.abs() <= MAX_BIN
    torch.testing.assert_close(ops.symlog(y[inside]), x[inside], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("space", ["symexp", "symlog"])
@SETTINGS
@given(target=VECTORS)
def test_twohot_encoding_is_a_finite_distribution_on_two_neighbours_that_decodes_to_the_clipped_target(
    space, target
):
    bins = BINS[space]  # symexp bins encode the target itself; symlog bins encode symlog(target)
    target = torch.from_numpy(target)
    y = ops.symlog(target) if space == "symlog" else target
    probs = twohot_encode(y, bins)  # (n, 255)
    assert torch.isfinite(probs).all() and (probs >= 0).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(len(y)))
    for row in probs:
        support = torch.nonzero(row).flatten().tolist()
        assert len(support) in (1, 2) and support[-1] - support[0] <= 1
    clipped = y.clamp(float(bins[0]), float(bins[-1]))
    decoded = (probs.double() * bins.double()).sum(-1)
    torch.testing.assert_close(decoded, clipped.double(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ops.twohot_mean(probs, bins), clipped, rtol=1e-5, atol=1e-5)  # the code's decoder


@SETTINGS
@given(
    logits=hnp.arrays(np.float32, st.tuples(st.integers(1, 4), st.just(255)), elements=HUGE),
    target=hnp.arrays(np.float32, 4, elements=HUGE),
)
def test_twohot_loss_and_mean_are_finite_for_any_finite_logits_and_target(logits, target):
    logits = torch.from_numpy(logits)
    target = torch.from_numpy(target[: len(logits)])
    for dist in (TwoHot(logits, BINS["symexp"]), TwoHot(logits, BINS["symlog"], symlog=True)):
        loss = dist.loss(target)
        assert loss.shape == target.shape
        assert torch.isfinite(loss).all() and (loss >= 0).all()
        mean = dist.mean()
        assert torch.isfinite(mean).all() and (mean.abs() <= MAX_BIN * (1 + 1e-6)).all()


@SETTINGS
@given(
    batches=st.lists(hnp.arrays(np.float32, st.integers(1, 16), elements=HUGE), min_size=1, max_size=5),
    value=HUGE,
)
def test_return_normalisation_stays_finite_for_returns_up_to_1e30(batches, value):
    norm = ops.ReturnNormalizer()
    seen = 0.0
    for returns in batches:
        ret = torch.from_numpy(returns)
        seen = max(seen, float(ret.abs().max()))
        norm.update(ret)
        offset, scale = norm.stats()
        assert torch.isfinite(norm.low) and torch.isfinite(norm.high)
        # An EMA from zero of percentiles stays within the largest magnitude seen.
        assert max(abs(float(norm.low)), abs(float(norm.high))) <= seen * (1 + 1e-6)
        assert torch.isfinite(offset) and torch.isfinite(scale) and scale >= norm.limit
        adv = (ret - value) / scale  # as the actor-critic normalises its advantages
        assert torch.isfinite(adv).all()
