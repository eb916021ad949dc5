"""DeepMind Control suite: `dmc:<domain>_<task>` observations, action repeat, episode ends, errors,
and a short training run from pixels that writes metrics, a checkpoint and an open-loop video."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("dm_control", reason="dm-control is not installed: pip install 'reverie[dmc]'")

import reverie  # noqa: E402
from reverie.config import EnvConfig  # noqa: E402
from reverie.envs import make_env  # noqa: E402
from reverie.errors import EnvError  # noqa: E402
from reverie.logging import read_metrics  # noqa: E402


def proprio(**kwargs) -> EnvConfig:
    return EnvConfig(image=False, **kwargs)


def test_proprio_observations_are_named_float_vectors():
    env = make_env("dmc:cartpole_swingup", proprio())
    first = env.reset()
    assert set(env.obs_space) == {"position", "velocity"}
    assert first["position"].shape == (3,) and first["velocity"].shape == (2,)
    assert first["position"].dtype == np.float32 and first["is_first"]
    assert env.act_space.kind == "continuous" and env.act_space.dim == 1
    env.close()


def test_scalar_observations_become_length_one_vectors():
    env = make_env("dmc:walker_walk", proprio())
    assert env.obs_space["height"].shape == (1,)
    assert env.reset()["height"].shape == (1,)
    env.close()


def test_pixels_are_uint8_of_the_configured_size_without_proprio():
    env = make_env("dmc:cartpole_swingup", EnvConfig(proprio=False, size=(32, 48)))
    assert set(env.obs_space) == {"image"}
    image = env.reset()["image"]
    assert image.shape == (32, 48, 3) and image.dtype == np.uint8
    assert image.std() > 0  # a rendered scene, not a blank frame
    env.close()


def test_action_repeat_advances_the_physics_and_sums_rewards():
    one = make_env("dmc:cartpole_swingup", proprio(action_repeat=1), seed=3)
    two = make_env("dmc:cartpole_swingup", proprio(action_repeat=2), seed=3)
    one.reset(), two.reset()
    action = np.float32([0.5])
    singles = [one.step(action) for _ in range(2)]
    step = two.step(action)
    dm_env = two.env._env
    assert dm_env.physics.data.time == pytest.approx(2 * dm_env.control_timestep())
    np.testing.assert_allclose(step["position"], singles[-1]["position"], rtol=1e-6)
    assert step["reward"] == pytest.approx(singles[0]["reward"] + singles[1]["reward"], rel=1e-6)
    one.close(), two.close()


def test_episode_ends_at_the_time_limit_as_truncation():
    env = make_env("dmc:cartpole_swingup", proprio(action_repeat=2))
    env.reset()
    steps = 0
    while True:
        step = env.step(np.float32([0.0]))
        steps += 1
        if step["is_last"]:
            break
    assert steps == 500  # 1000 control steps / action repeat 2
    assert not step["is_terminal"]
    env.close()


def test_same_seed_same_start_different_seed_different_start():
    first = [make_env("dmc:cartpole_swingup", proprio(), seed=s).reset()["position"] for s in (1, 1, 2)]
    np.testing.assert_array_equal(first[0], first[1])
    assert not np.array_equal(first[0], first[2])


def test_cup_is_ball_in_cup():
    env = make_env("dmc:cup_catch", proprio())
    assert "position" in env.reset()
    env.close()


def test_unknown_task_names_the_closest_one():
    with pytest.raises(EnvError, match="unknown DeepMind Control task 'walker_wakl'; did you mean 'dmc:walker_walk'"):
        make_env("dmc:walker_wakl")


def test_dmc_vision_trains_from_pixels_and_writes_metrics_checkpoint_and_video(tmp_path):
    result = reverie.train(
        "dmc:cartpole_swingup", logdir=tmp_path, presets=["dmc_vision", "debug"], steps=240, progress=False,
        overrides={"run.prefill": 120, "run.train_ratio": 32, "run.eval_every": 0, "model.encoder.depth": 4,
                   "model.decoder.depth": 4},
    )
    assert result["updates"] > 0
    rows = read_metrics(tmp_path)
    assert any("loss/rec" in row for row in rows)
    assert any("openloop/image/mse" in row for row in rows)
    assert list((tmp_path / "checkpoints").glob("ckpt_*.pt"))
    videos = sorted((tmp_path / "videos").glob("openloop_image_*.gif"))
    assert videos, "no open-loop video written"
