"""Videos of evaluation episodes: the episode recorder, rendered frames of vector envs, open-loop
predictions over long episodes, and `reverie eval --video` end to end."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from reverie import config as C
from reverie import video
from reverie.agents.dreamer import DreamerAgent
from reverie.api import Policy
from reverie.errors import UserError
from reverie.envs import make_env
from reverie.run.evaluate import EpisodeRecorder, episode_openloop, run_episodes
from test_video import gif_frames
from toy_envs import DictObsEnv

SMALL_CNN = {"model.encoder.mults": [2, 2], "model.decoder.mults": [2, 2]}


# --------------------------------------------------------------------------------------------
# Recording evaluation episodes


def fake_step(t_values, first, last, n=2):
    return {"x": np.asarray(t_values, np.float32)[:, None], "reward": np.ones(n, np.float32),
            "is_first": np.asarray(first), "is_last": np.asarray(last), "is_terminal": np.zeros(n, bool),
            "log/score": np.zeros(n, np.float32)}


def test_recorder_stores_each_step_with_the_action_chosen_at_it():
    recorder = EpisodeRecorder(limit=2)
    # env 0: an episode of 3 steps, then a new one; env 1: an episode of 4 steps.
    recorder.observe(fake_step([0, 10], [True, True], [False, False]))
    recorder.act(np.array([[0.5], [1.5]], np.float32))
    recorder.observe(fake_step([1, 11], [False, False], [False, False]))
    recorder.act(np.array([[0.6], [1.6]], np.float32))
    recorder.observe(fake_step([2, 12], [False, False], [True, False]))  # env 0 ends
    assert len(recorder.episodes) == 1
    recorder.act(np.array([[9.0], [1.7]], np.float32))  # env 0's action is ignored by the env
    recorder.observe(fake_step([0, 13], [True, False], [False, True]))  # env 1 ends
    assert recorder.full
    first, second = recorder.episodes
    assert first["x"][:, 0].tolist() == [0, 1, 2]
    assert first["action"][:, 0].tolist() == pytest.approx([0.5, 0.6, 0.0])  # none after the last step
    assert first["is_first"].tolist() == [True, False, False] and first["is_last"].tolist() == [False, False, True]
    assert second["x"][:, 0].tolist() == [10, 11, 12, 13]
    assert second["action"][:, 0].tolist() == pytest.approx([1.5, 1.6, 1.7, 0.0])
    assert "log/score" not in first
    recorder.observe(fake_step([1, 0], [False, True], [True, False]))  # full: nothing more is kept
    assert len(recorder.episodes) == 2


class RenderEnv(gym.Env):
    """A 2-vector observation; renders a (6, 4, 3) frame whose value is the step count × 20."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, render_mode=None, length=5):
        self.render_mode, self.length = render_mode, length
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self._t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self._t += 1
        return np.zeros(2, np.float32), 1.0, self._t >= self.length, False, {}

    def render(self):
        if self.render_mode == "rgb_array":
            return np.full((6, 4, 3), 20 * self._t, np.uint8)
        return None


def vector_policy(spec, logdir):
    cfg = C.make_config(C.compose_presets(["debug"]))
    probe = make_env(lambda: RenderEnv(), cfg.env)
    agent = DreamerAgent(probe.obs_space, probe.act_space, cfg)
    return Policy(agent, cfg, spec, logdir=logdir, step=42)


def test_vector_env_videos_are_its_rendered_frames(tmp_path):
    policy = vector_policy("test_video_eval:RenderEnv", tmp_path)  # a string id: made with render_mode
    result = policy.evaluate(episodes=2, video=True)
    assert result["episodes"] == 2 and result["return_mean"] == 5.0
    assert result["videos"] == [str(tmp_path / "videos" / "eval_0_000000042.gif")]
    frames = gif_frames(result["videos"][0])
    assert [int(f[0, 0, 0]) for f in frames] == [0, 20, 40, 60, 80, 100]  # reset + 5 steps
    assert frames[0].shape == (6, 4, 3)


def test_env_that_cannot_render_still_evaluates_and_says_why(tmp_path):
    policy = vector_policy(lambda: RenderEnv(render_mode=None), tmp_path)
    result = policy.evaluate(episodes=1, video=True)
    assert result["episodes"] == 1 and result["videos"] == []
    assert "cannot be rendered" in result["video_note"] and "rgb_array" in result["video_note"]

    policy = vector_policy("toy_envs:CueEnv", tmp_path)  # its class takes no render_mode
    result = policy.evaluate(episodes=1, video=True)
    assert result["episodes"] == 1 and result["videos"] == []
    assert "render_mode" in result["video_note"]


def test_evaluate_without_video_is_unchanged_and_video_needs_a_folder():
    policy = vector_policy("test_video_eval:RenderEnv", None)
    assert policy.evaluate(episodes=1) == {"return_mean": 5.0, "return_std": 0.0, "return_min": 5.0,
                                           "return_max": 5.0, "length_mean": 5.0, "episodes": 1}
    with pytest.raises(UserError, match="no logdir"):
        policy.evaluate(episodes=1, video=True)


def test_long_episodes_are_predicted_in_chunks_that_cover_every_step():
    cfg = C.make_config(C.compose_presets(["debug"]), SMALL_CNN)
    env = make_env(lambda: DictObsEnv(length=23), cfg.env)
    agent = DreamerAgent(env.obs_space, env.act_space, cfg)
    recorder = EpisodeRecorder(limit=1)
    from reverie.envs import VecEnv

    with VecEnv([lambda: DictObsEnv(length=23)]) as envs:
        run_episodes(agent, envs, 1, record=recorder)
    (episode,) = recorder.episodes
    assert len(episode["image"]) == 24  # reset step + 23 steps
    ((truth, pred),) = episode_openloop(agent, episode, context=3, chunk=10).values()
    assert truth.shape == pred.shape == (24, 16, 16, 3) and pred.dtype == np.uint8
    assert np.array_equal(truth, episode["image"])


# --------------------------------------------------------------------------------------------
# End to end


def test_train_then_evaluate_with_video_writes_the_truth_model_error_grid(tmp_path, capsys):
    import reverie
    from reverie import cli

    torch.set_num_threads(1)
    logdir = tmp_path / "run"
    reverie.train("toy_envs:DictObsEnv", logdir=logdir, presets=["debug"], steps=200, progress=False,
                  overrides={"run.prefill": 100, "run.train_ratio": 16, "run.eval_every": 0,
                             "run.log_every": 0, **SMALL_CNN})
    result = reverie.evaluate(logdir, episodes=1, video=True)
    gif = logdir / "videos" / "eval_0_000000200.gif"
    assert result["videos"] == [str(gif)]
    frames = gif_frames(gif)
    L = video.label_width()  # the row labels come first
    assert len(frames) == 21 and frames[0].shape == (3 * 16, L + 16, 3)  # 20 steps + reset; 3 rows
    # The top row is the env's image: DictObsEnv shows grey (10 t) at step t.
    assert [int(f[0, L, 0]) for f in frames[:3]] == [0, 10, 20]
    # Each row's label is drawn (white text on black), the same in every frame.
    for row in range(3):
        assert (frames[0][16 * row:16 * (row + 1), :L] == 255).any()
    assert all(np.array_equal(f[:, :L], frames[0][:, :L]) for f in frames)
    assert (logdir / "videos" / "eval_0_000000200.mp4").exists()
    assert json.loads((logdir / "eval.json").read_text())[-1]["videos"] == [str(gif)]

    capsys.readouterr()
    assert cli.main(["eval", "--logdir", str(logdir), "--episodes", "2", "--video", "--video-episodes", "2"]) == 0
    out = capsys.readouterr().out
    assert f"video written: {logdir / 'videos' / 'eval_1_000000200.gif'}" in out
    assert ".mp4" in out
