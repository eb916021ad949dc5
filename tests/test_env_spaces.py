"""Environment layer, spaces: Gymnasium observation spaces to Reverie's observation dict
(vectors, images, nested dicts) and action spaces to the agent's one-hot or [-1, 1] actions."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces

from reverie.envs import ActionSpace, ArraySpec, action_space_from_gym, obs_spec_from_gym
from reverie.envs.spaces import ObsConverter, convert_obs
from reverie.errors import EnvError


# ----------------------------------------------------------------------------- observations


def test_box_vector_obs_is_flattened_float32():
    space = spaces.Box(-5.0, 5.0, (2, 3), np.float64)
    assert obs_spec_from_gym(space) == {"vector": ArraySpec((6,), np.float32)}
    out = convert_obs(space, np.arange(6, dtype=np.float64).reshape(2, 3))
    assert out["vector"].dtype == np.float32
    np.testing.assert_array_equal(out["vector"], [0, 1, 2, 3, 4, 5])


def test_uint8_box_hwc_is_image_and_hw_gets_a_channel():
    rgb = spaces.Box(0, 255, (4, 5, 3), np.uint8)
    spec = obs_spec_from_gym(rgb)
    assert spec == {"image": ArraySpec((4, 5, 3), np.uint8)} and spec["image"].is_image
    grey = spaces.Box(0, 255, (4, 5), np.uint8)
    assert obs_spec_from_gym(grey) == {"image": ArraySpec((4, 5, 1), np.uint8)}
    frame = np.arange(20, dtype=np.uint8).reshape(4, 5)
    out = convert_obs(grey, frame)["image"]
    assert out.shape == (4, 5, 1) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], frame)
    # Two channels is not an image layout: flattened to a vector.
    two = spaces.Box(0, 255, (4, 5, 2), np.uint8)
    assert obs_spec_from_gym(two) == {"vector": ArraySpec((40,), np.float32)}
    assert not ArraySpec((4, 5, 2), np.float32).is_image


def test_discrete_multidiscrete_multibinary_obs():
    discrete = spaces.Discrete(3, start=1)
    assert obs_spec_from_gym(discrete) == {"vector": ArraySpec((3,), np.float32, classes=(3,))}
    np.testing.assert_array_equal(convert_obs(discrete, 2)["vector"], [0, 1, 0])

    multi = spaces.MultiDiscrete([2, 3])
    assert obs_spec_from_gym(multi) == {"vector": ArraySpec((5,), np.float32, classes=(2, 3))}
    np.testing.assert_array_equal(convert_obs(multi, np.array([1, 2]))["vector"], [0, 1, 0, 0, 1])

    binary = spaces.MultiBinary((2, 2))
    assert obs_spec_from_gym(binary) == {"vector": ArraySpec((4,), np.float32)}  # continuous 0/1, not categorical
    out = convert_obs(binary, np.array([[1, 0], [0, 1]], np.int8))["vector"]
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [1, 0, 0, 1])


def test_nested_dict_obs_keys_joined_with_slash():
    space = spaces.Dict(
        {
            "cam": spaces.Box(0, 255, (8, 8, 3), np.uint8),
            "state": spaces.Dict({"pos": spaces.Box(-1, 1, (3,)), "mode": spaces.Discrete(2)}),
        }
    )
    spec = obs_spec_from_gym(space)
    assert spec == {
        "cam": ArraySpec((8, 8, 3), np.uint8),
        "state/pos": ArraySpec((3,), np.float32),
        "state/mode": ArraySpec((2,), np.float32, classes=(2,)),
    }
    raw = {"cam": np.full((8, 8, 3), 7, np.uint8), "state": {"pos": np.array([0.5, 0, -1]), "mode": 1}}
    out = ObsConverter(space)(raw)
    assert out["cam"].dtype == np.uint8 and out["cam"][0, 0, 0] == 7
    np.testing.assert_array_equal(out["state/pos"], np.float32([0.5, 0, -1]))
    np.testing.assert_array_equal(out["state/mode"], [0, 1])


def test_reserved_obs_key_is_rejected():
    space = spaces.Dict({"reward": spaces.Box(-1, 1, (1,)), "pos": spaces.Box(-1, 1, (2,))})
    with pytest.raises(EnvError, match="observation key 'reward' is reserved"):
        obs_spec_from_gym(space)


def test_unsupported_spaces_name_the_space_and_what_is_supported():
    with pytest.raises(EnvError, match=r"observation space Text\(.*not supported.*Box, Discrete"):
        obs_spec_from_gym(spaces.Text(5))
    with pytest.raises(EnvError, match=r"observation entry 'note' has space Text\("):
        obs_spec_from_gym(spaces.Dict({"note": spaces.Text(5), "pos": spaces.Box(-1, 1, (2,))}))
    with pytest.raises(EnvError, match=r"action space Dict\(.*not supported.*Discrete, MultiDiscrete"):
        action_space_from_gym(spaces.Dict({"a": spaces.Discrete(2)}))


def test_obs_outside_its_space_is_reported():
    with pytest.raises(EnvError, match="outside its discrete space"):
        convert_obs(spaces.Discrete(3), 5)


# ----------------------------------------------------------------------------- actions


def test_discrete_action_one_hot_to_int_and_back():
    act = action_space_from_gym(spaces.Discrete(3))
    assert act.discrete and act.dim == 3 and act.sizes == (3,)
    assert act.to_env(np.float32([0.1, 0.2, 0.9])) == 2
    assert isinstance(act.to_env(np.float32([1, 0, 0])), int)
    np.testing.assert_array_equal(act.from_env(1), [0, 1, 0])
    shifted = action_space_from_gym(spaces.Discrete(3, start=-1))
    assert shifted.to_env(np.float32([1, 0, 0])) == -1
    np.testing.assert_array_equal(shifted.from_env(1), [0, 0, 1])


def test_multidiscrete_and_multibinary_actions():
    act = action_space_from_gym(spaces.MultiDiscrete([3, 4]))
    assert act.sizes == (3, 4) and act.dim == 7
    env_action = act.to_env(np.float32([0, 0, 1, 0, 1, 0, 0]))
    assert env_action.dtype == np.int64
    np.testing.assert_array_equal(env_action, [2, 1])
    assert spaces.MultiDiscrete([3, 4]).contains(env_action)
    np.testing.assert_array_equal(act.from_env(np.array([1, 3])), [0, 1, 0, 0, 0, 0, 1])

    binary = action_space_from_gym(spaces.MultiBinary(2))
    assert binary.sizes == (2, 2) and binary.dim == 4
    out = binary.to_env(np.float32([0, 1, 1, 0]))
    np.testing.assert_array_equal(out, [1, 0])
    assert spaces.MultiBinary(2).contains(out)


def test_box_action_rescaled_to_bounds():
    space = spaces.Box(np.float32([0, -2]), np.float32([10, 2]))
    act = action_space_from_gym(space)
    assert act.kind == "continuous" and not act.discrete and act.dim == 2
    assert act.low == (0.0, -2.0) and act.high == (10.0, 2.0)
    out = act.to_env(np.float32([0.0, 1.0]))
    assert out.dtype == np.float32 and out.shape == (2,)
    np.testing.assert_allclose(out, [5.0, 2.0])
    np.testing.assert_allclose(act.to_env(np.float32([-1.0, 0.5])), [0.0, 1.0])
    np.testing.assert_allclose(act.to_env(np.float32([3.0, -3.0])), [10.0, -2.0])  # clipped first
    np.testing.assert_allclose(act.from_env(np.float32([5.0, 1.0])), [0.0, 0.5])
    np.testing.assert_allclose(act.from_env(np.float32([2.5, -2.0])), [-0.5, -1.0])


def test_box_action_shape_and_infinite_bounds():
    square = action_space_from_gym(spaces.Box(-3.0, 3.0, (2, 2), np.float64))
    out = square.to_env(np.float32([1, -1, 0.5, 0]))
    assert out.shape == (2, 2) and out.dtype == np.float64
    np.testing.assert_allclose(out, [[3, -3], [1.5, 0]])
    unbounded = action_space_from_gym(spaces.Box(-np.inf, np.inf, (2,)))
    np.testing.assert_allclose(unbounded.to_env(np.float32([0.5, 3.0])), [0.5, 1.0])
    half = action_space_from_gym(spaces.Box(np.float32([0, 0]), np.float32([np.inf, 4])))
    np.testing.assert_allclose(half.to_env(np.float32([-0.5, -0.5])), [0.0, 1.0])


def test_sample_random_gives_valid_agent_actions():
    rng = np.random.default_rng(0)
    act = ActionSpace("discrete", sizes=(3, 2))
    sample = act.sample_random(rng, 50)
    assert sample.shape == (50, 5) and sample.dtype == np.float32
    np.testing.assert_array_equal(sample[:, :3].sum(1), 1)
    np.testing.assert_array_equal(sample[:, 3:].sum(1), 1)
    assert set(sample[:, :3].argmax(1)) == {0, 1, 2}
    box = ActionSpace("continuous", low=(-1.0,) * 4, high=(1.0,) * 4, shape=(4,))
    assert box.dtype == np.float32 and act.dtype == np.int64
    cont = box.sample_random(rng, 50)
    assert cont.shape == (50, 4) and cont.min() >= -1 and cont.max() <= 1 and cont.std() > 0.3
