"""Tuple observation spaces, alone and nested with Dicts, flattened into one observation key per
leaf: Blackjack-v1 end to end through the env adapter, nested key paths with an image leaf, and
unsupported leaves named by their key path."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from reverie.config import EnvConfig
from reverie.envs import ArraySpec, make_env, make_vec_env, obs_spec_from_gym
from reverie.envs.spaces import ObsConverter
from reverie.errors import EnvError

BLACKJACK_SIZES = (32, 11, 2)  # player sum, dealer card, usable ace


def _one_hots(raw: tuple) -> dict[str, np.ndarray]:
    """Blackjack's raw (sum, card, ace) -> the expected one-hot vector per key."""
    return {f"obs/{i}": np.eye(n, dtype=np.float32)[int(v)] for i, (v, n) in enumerate(zip(raw, BLACKJACK_SIZES))}


def test_blackjack_tuple_obs_is_one_one_hot_key_per_entry():
    env = make_env("Blackjack-v1", seed=5)
    assert isinstance(env.env.observation_space, spaces.Tuple)
    assert env.obs_space == {f"obs/{i}": ArraySpec((n,), np.float32, (n,)) for i, n in enumerate(BLACKJACK_SIZES)}
    assert list(env.obs_space) == ["obs/0", "obs/1", "obs/2"]

    twin = gym.make("Blackjack-v1")  # the same env unconverted, driven with the same seed and actions
    raw, _ = twin.reset(seed=5)
    step = env.reset()
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(40):
        assert set(step) == {"obs/0", "obs/1", "obs/2", "reward", "is_first", "is_last", "is_terminal"}
        for key, expected in _one_hots(raw).items():
            assert step[key].dtype == np.float32
            np.testing.assert_array_equal(step[key], expected, err_msg=f"{key} for raw {raw}")
        seen.add(tuple(int(v) for v in raw))
        if step["is_last"]:
            raw, _ = twin.reset()
            step = env.reset()
            continue
        action = int(rng.integers(2))  # 0 stick, 1 hit
        raw, reward, *_ = twin.step(action)
        step = env.step(np.eye(2, dtype=np.float32)[action])
        assert float(step["reward"]) == reward
    assert len(seen) > 5  # the trajectory visited many states, so the one-hot positions were exercised


def test_blackjack_vec_env_stacks_tuple_keys():
    venv = make_vec_env("Blackjack-v1", EnvConfig(parallel=False), num_envs=2, seed=1)
    try:
        first = venv.reset()
    finally:
        venv.close()
    for i, n in enumerate(BLACKJACK_SIZES):
        assert first[f"obs/{i}"].shape == (2, n) and first[f"obs/{i}"].dtype == np.float32
        np.testing.assert_array_equal(first[f"obs/{i}"].sum(1), [1, 1])  # one one-hot row per env


def test_nested_dict_and_tuple_keys_follow_the_path_and_images_stay_uint8():
    space = spaces.Dict(
        {
            "a": spaces.Tuple((spaces.Box(0, 255, (6, 5, 3), np.uint8), spaces.Discrete(3, start=1))),
            "b": spaces.Tuple((spaces.Dict({"x": spaces.Box(-1, 1, (2, 2)), "y": spaces.MultiBinary(3)}),)),
            "c": spaces.Box(-1, 1, (1,)),
        }
    )
    spec = obs_spec_from_gym(space)
    assert list(spec) == ["a/0", "a/1", "b/0/x", "b/0/y", "c"]
    assert spec["a/0"] == ArraySpec((6, 5, 3), np.uint8) and spec["a/0"].is_image
    assert spec["a/1"] == ArraySpec((3,), np.float32, classes=(3,))
    assert spec["b/0/x"] == ArraySpec((4,), np.float32) and spec["b/0/y"] == ArraySpec((3,), np.float32)

    frame = np.arange(90, dtype=np.uint8).reshape(6, 5, 3)
    raw = {"a": (frame, 3), "b": [{"x": np.array([[0.5, 0], [0, -1]]), "y": np.int8([1, 0, 1])}], "c": np.zeros(1)}
    out = ObsConverter(space)(raw)
    assert list(out) == list(spec)  # same keys in the same order as the spec
    assert out["a/0"].dtype == np.uint8 and out["a/0"].shape == (6, 5, 3)
    np.testing.assert_array_equal(out["a/0"], frame)
    np.testing.assert_array_equal(out["a/1"], [0, 0, 1])  # Discrete(3, start=1): value 3 is the last class
    np.testing.assert_array_equal(out["b/0/x"], np.float32([0.5, 0, 0, -1]))
    np.testing.assert_array_equal(out["b/0/y"], [1, 0, 1])


def test_top_level_tuple_with_dict_and_grey_image():
    space = spaces.Tuple((spaces.Dict({"img": spaces.Box(0, 255, (4, 3), np.uint8)}), spaces.MultiDiscrete([2, 3])))
    converter = ObsConverter(space)
    assert converter.spec == {"obs/0/img": ArraySpec((4, 3, 1), np.uint8), "obs/1": ArraySpec((5,), np.float32, (2, 3))}
    grey = np.full((4, 3), 9, np.uint8)
    out = converter(({"img": grey}, np.array([1, 0])))
    assert out["obs/0/img"].shape == (4, 3, 1) and out["obs/0/img"].dtype == np.uint8
    np.testing.assert_array_equal(out["obs/0/img"][..., 0], grey)
    np.testing.assert_array_equal(out["obs/1"], [0, 1, 1, 0, 0])
    for sample in (space.sample() for _ in range(5)):  # gymnasium's own samples convert to the spec
        assert {k: (v.shape, v.dtype) for k, v in converter(sample).items()} == {
            k: (s.shape, s.dtype) for k, s in converter.spec.items()
        }


@pytest.mark.parametrize(
    "space, pattern",
    [
        (spaces.Tuple((spaces.Discrete(2), spaces.Text(5))), r"observation entry 'obs/1' has space Text\("),
        (spaces.Dict({"a": spaces.Tuple((spaces.Box(-1, 1, (1,)), spaces.Sequence(spaces.Discrete(2))))}),
         r"observation entry 'a/1' has space Sequence\("),
        (spaces.Tuple((spaces.Dict({"g": spaces.Graph(spaces.Box(-1, 1, (1,)), None)}),)),
         r"observation entry 'obs/0/g' has space Graph\("),
    ],
)
def test_unsupported_leaf_inside_a_tuple_names_its_key_path(space, pattern):
    with pytest.raises(EnvError, match=pattern + r".*is not supported: Reverie handles Box, Discrete") as info:
        obs_spec_from_gym(space)
    assert "\n" not in str(info.value)


def test_tuple_paths_keep_duplicate_reserved_and_missing_entry_errors():
    with pytest.raises(EnvError, match="observation key 'a/0' occurs twice"):
        obs_spec_from_gym(spaces.Dict({"a": spaces.Tuple((spaces.Discrete(2),)), "a/0": spaces.Discrete(2)}))
    with pytest.raises(EnvError, match="observation key 'reward' is reserved"):
        obs_spec_from_gym(spaces.Dict({"reward": spaces.Discrete(2), "t": spaces.Tuple((spaces.Discrete(2),))}))
    with pytest.raises(EnvError, match="empty Dict or Tuple"):
        obs_spec_from_gym(spaces.Tuple(()))
    converter = ObsConverter(spaces.Tuple((spaces.Discrete(2), spaces.Discrete(3))))
    with pytest.raises(EnvError, match="missing entry 'obs/1' declared by its Tuple space"):
        converter((1,))
