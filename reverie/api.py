"""The Python API: train on an env id, instance or factory; load an agent from a logdir; act step
by step with its recurrent state; evaluate.

    import reverie
    result = reverie.train("CartPole-v1", logdir="runs/cartpole", steps=20_000)
    policy = reverie.load("runs/cartpole")
    print(policy.evaluate(episodes=10))
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from . import config as config_lib
from .agents import Agent, make_agent
from .config import Config
from .envs import GymEnv, default_suite_preset, make_env, make_vec_env
from .errors import CheckpointError, UserError, notice
from .run import checkpoint as ckpt
from .run.device import resolve_device
from .run.evaluate import EpisodeRecorder, run_episodes, write_episode_videos
from .run.train import train as _train_loop


def build_config(
    env: Any = None,
    presets: str | list[str] | tuple[str, ...] = (),
    overrides: dict[str, Any] | list[str] | None = None,
    logdir: str | Path | None = None,
    steps: int | None = None,
    seed: int | None = None,
) -> Config:
    """Defaults for the kinds of preset not named, the named presets in order, then overrides.

    The default suite preset follows the env id: ``dmc_proprio`` for ``dmc:…``, ``atari100k`` for
    ``atari:…``, ``crafter`` for ``crafter``, ``classic`` otherwise.
    """
    extra: dict[str, Any] = {}
    if isinstance(env, str):
        extra["env.id"] = env
    if logdir is not None:
        extra["logdir"] = str(logdir)
    if steps is not None:
        extra["run.steps"] = steps
    if seed is not None:
        extra["seed"] = seed
    if isinstance(overrides, list):
        overrides = config_lib.parse_overrides(overrides)
    names = preset_names(presets, env)
    if steps is not None:
        check_steps(steps)
    return config_lib.make_config(names, {**(overrides or {}), **extra})


def check_steps(steps: Any) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise UserError(f"steps must be a positive number of env steps, got {steps!r}")
    return int(steps)


def preset_list(presets: str | list[str] | tuple[str, ...]) -> list[str]:
    """The presets a caller named: one name or a list of them."""
    return [presets] if isinstance(presets, str) else list(presets)


def preset_names(presets: str | list[str] | tuple[str, ...], env: Any = None) -> list[str]:
    """The presets applied, in order: the defaults for the kinds not named, then `presets`."""
    return config_lib.compose_presets(preset_list(presets), default_suite_preset(env))


RESUME_KEYS = ("run.steps", "run.threads", "run.device", "run.precision", "run.compile", "run.retain_memory")
"""Config keys a resumed run takes from its caller; every other key keeps its saved value."""


def train(
    env: str | gym.Env | Any = None,
    logdir: str | Path | None = None,
    presets: str | list[str] | tuple[str, ...] = (),
    steps: int | None = None,
    seed: int | None = None,
    overrides: dict[str, Any] | list[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train DreamerV3 (or the agent the presets name) on `env`: a Gymnasium id (default
    CartPole-v1), a `module:EnvId` string, a `gymnasium.Env` instance or a zero-argument factory.
    Resumes if `logdir` (default `runs/<env>`) holds a run: its saved config is used, with the
    runtime keys of `overrides` (RESUME_KEYS) and `steps`; everything else given is named as
    ignored. Returns {"step", "updates", "episodes", "eval", "logdir"}."""
    cfg = run_config(env, logdir, presets, steps, seed, overrides)
    spec = None if env is None or isinstance(env, str) else env
    return _train_loop(cfg, spec, progress)


def run_config(env: Any = None, logdir: str | Path | None = None, presets: str | list[str] | tuple[str, ...] = (),
               steps: int | None = None, seed: int | None = None,
               overrides: dict[str, Any] | list[str] | None = None) -> Config:
    """The config `train` runs with these arguments: the saved one when `logdir` holds a run
    (`resume_config`), else a new one (`build_config`)."""
    named = logdir is not None
    logdir = Path(logdir) if named else default_logdir(env)
    if (logdir / "config.yaml").exists():
        return resume_config(logdir, env, presets, overrides, steps, seed, default_logdir=not named)
    cfg = build_config(env if env is not None else DEFAULT_ENV, presets, overrides, logdir, steps, seed)
    if env is not None and not isinstance(env, str):
        cfg.env.id = f"{OBJECT_PREFIX}{_object_name(env)}"
    return cfg


def resume_config(logdir: Path, env: Any, presets, overrides, steps: int | None, seed: int | None,
                  default_logdir: bool = False) -> Config:
    """The saved config of the run in `logdir`, for resuming it there (wherever the run was made).

    Presets and overrides are checked as for a new run (an unknown key is still an error); the
    keys in RESUME_KEYS are taken from them, and a notice names what is ignored.
    """
    cfg = config_lib.load(logdir / "config.yaml")
    saved_object = cfg.env.id.startswith(OBJECT_PREFIX)
    if saved_object and (env is None or isinstance(env, str)):
        raise UserError(
            f"{logdir} was trained on a Python env object ({cfg.env.id[len(OBJECT_PREFIX):]}); resume "
            "it from Python and pass the env again: reverie.train(env, logdir=...)"
        )
    names = preset_list(presets)
    for name in names:
        config_lib.load_preset(name)  # an unknown preset is an error here too
    if isinstance(overrides, list):
        overrides = config_lib.parse_overrides(overrides)
    requested = config_lib.update(copy.deepcopy(cfg), dict(overrides or {}))
    ignored = [f"preset {name}" for name in names]
    if isinstance(env, str) and env != cfg.env.id:
        ignored.append(f"env {env} (the run's is {cfg.env.id})")
    if seed is not None and seed != cfg.seed:
        ignored.append(f"seed {seed} (the run's is {cfg.seed})")
    for key in config_lib.leaf_paths(cfg):
        value = config_lib.get(requested, key)
        if key in RESUME_KEYS:
            config_lib.update(cfg, {key: value})
        elif value != config_lib.get(cfg, key):
            ignored.append(f"{key}={value}")
    if steps is not None:
        cfg.run.steps = check_steps(steps)
    cfg.logdir = str(logdir)  # the run's files are where it is now, whatever config.yaml says
    config_lib.validate(cfg)
    if ignored:
        notice(f"resuming {logdir} with its saved config; ignored: {', '.join(ignored)} (a resumed run takes "
               f"only steps and {', '.join(k for k in RESUME_KEYS if k != 'run.steps')}; use a new logdir for a new run)")
    elif default_logdir:
        notice(f"resuming {logdir}, the default logdir for this env; use another logdir for a new run")
    return cfg


DEFAULT_ENV = "CartPole-v1"
OBJECT_PREFIX = "object:"  # env.id of a run trained on a Python env object (instance or factory)


def _object_name(env: Any) -> str:
    if isinstance(env, gym.Env):
        return type(env.unwrapped).__name__
    name = getattr(env, "__qualname__", type(env).__name__)
    return "custom_env" if "<lambda>" in name else name


def default_logdir(env: Any = None) -> Path:
    """`runs/<env id>` (":" and "/" as "_"), `runs/<class or function name>` for a Python env."""
    env = DEFAULT_ENV if env is None else env
    name = env if isinstance(env, str) else _object_name(env)
    return Path("runs") / name.replace(":", "_").replace("/", "_")


class Policy:
    """A trained agent loaded from a logdir, acting on Reverie step dicts (see `make_env`)."""

    def __init__(self, agent: Agent, cfg: Config, env_spec: Any = None, logdir: str | Path | None = None,
                 step: int = 0):
        self.agent, self.cfg, self.env_spec = agent, cfg, env_spec
        self.logdir = Path(logdir) if logdir is not None else None  # the run it was loaded from
        self.step = int(step)  # env steps of the loaded checkpoint

    def make_env(self, seed: int = 0) -> GymEnv:
        """One env of the kind the agent was trained on, speaking step dicts."""
        return make_env(self.env_spec, self.cfg.env, seed)

    def initial_state(self, batch_size: int = 1) -> dict[str, torch.Tensor]:
        return self.agent.init_state(batch_size)

    def act(self, step: dict[str, np.ndarray], state: dict[str, torch.Tensor], mode: str = "eval"):
        """One step for a single env: `step` is the env's step dict (unbatched). Returns
        (action vector, new state); pass the action to `GymEnv.step`."""
        batched = {k: np.asarray(v)[None] for k, v in step.items()}
        state, action, _ = self.agent.act(state, batched, mode)
        return action[0], state

    def evaluate(self, episodes: int = 10, mode: str = "eval", seed: int = 12345,
                 video: bool | str | Path = False, video_episodes: int = 1,
                 on_episode: Callable[[int, float, int], None] | None = None) -> dict[str, Any]:
        """Play `episodes` episodes; returns {"return_mean", "return_std", "return_min",
        "return_max", "length_mean", "episodes"}.

        With `video` (True: the run's logdir; or a folder), the first `video_episodes` episodes
        are also written as videos to `<folder>/videos/eval_{i}_{step:09d}.{gif,mp4}` (and to
        TensorBoard under `<folder>/tensorboard`): for image observations, the frames with the
        model's open-loop prediction of the same episode and its error below them; otherwise the
        env's rendered frames. The result then has "videos" (the GIF paths, as strings) and, when
        no video could be made, "video_note" (one line saying why). `on_episode(count, return,
        length)` is called as each episode finishes.
        """
        if not video:
            envs = make_vec_env(self.env_spec, self.cfg.env, 1, seed)
            try:
                return run_episodes(self.agent, envs, episodes, mode, on_episode=on_episode)
            finally:
                envs.close()
        folder = self._video_folder(video)
        if video_episodes < 1:
            raise UserError(f"video_episodes must be ≥ 1, got {video_episodes}")
        has_images = any(spec.is_image for spec in self.agent.obs_space.values())
        envs, note = self._make_video_envs(seed, render=not has_images)
        recorder = EpisodeRecorder(min(video_episodes, episodes), render=not has_images and not note)
        try:
            result: dict[str, Any] = run_episodes(self.agent, envs, episodes, mode, record=recorder,
                                                  on_episode=on_episode)
        finally:
            envs.close()
        note = note or recorder.render_note
        tb = _tensorboard(folder) if recorder.episodes else None
        try:
            paths = write_episode_videos(self.agent, recorder.episodes, folder, self.step, tb)
        finally:
            if tb is not None:
                tb.close()
        result["videos"] = [str(p) for p in paths]
        if not paths:
            result["video_note"] = note or "no video: the episodes have neither images nor rendered frames"
        return result

    def _video_folder(self, video: bool | str | Path) -> Path:
        if video is True:
            if self.logdir is None:
                raise UserError("this policy has no logdir to write videos to; pass video=<folder>")
            return self.logdir
        return Path(video)

    def _make_video_envs(self, seed: int, render: bool):
        """(one VecEnv, note): with `render`, a string id is made with render_mode="rgb_array";
        an env that refuses that argument is made without it, and the note says videos are off."""
        if render and isinstance(self.env_spec, str):
            try:
                return make_vec_env(self.env_spec, self.cfg.env, 1, seed,
                                    make_kwargs={"render_mode": "rgb_array"}), ""
            except TypeError as error:
                note = f"no video: {self.env_spec} does not take render_mode='rgb_array' ({error})"
                return make_vec_env(self.env_spec, self.cfg.env, 1, seed), note
        return make_vec_env(self.env_spec, self.cfg.env, 1, seed), ""


def _tensorboard(logdir: Path) -> Any:
    """A SummaryWriter on logdir/tensorboard (a new event file: a running training's is left
    alone), or None without tensorboard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(logdir / "tensorboard"))


def load(logdir: str | Path, env: Any = None, device: str = "auto", search: int = 0) -> Policy:
    """Load the newest checkpoint of a run. `env` is needed only when the run was trained on an
    env instance or factory rather than an id. `search` > 0 makes a Dreamer agent with an actor and a
    critic act by a tree search of that many simulations over its world model (discrete actions;
    `behavior.planner.kind=search`, the tree of `behavior.planner.tree`)."""
    logdir = Path(logdir)
    if not (logdir / "config.yaml").exists():
        raise CheckpointError(f"{logdir} holds no run (no config.yaml); pass the logdir of a training run")
    cfg = config_lib.load(logdir / "config.yaml")
    if search:
        cfg = _with_search(cfg, search)
    if env is None and cfg.env.id.startswith(OBJECT_PREFIX):
        raise UserError(
            f"{logdir} was trained on a Python env object ({cfg.env.id[len(OBJECT_PREFIX):]}); load or "
            "evaluate it from Python and pass the env again: reverie.load(logdir, env=...)"
        )
    spec = env if env is not None else cfg.env.id
    if isinstance(spec, gym.Env):
        spec = copy.deepcopy(spec)
    device = resolve_device(device, "device")
    probe = make_env(spec, cfg.env, 0)
    agent = make_agent(probe.obs_space, probe.act_space, cfg, device)
    probe.close()
    found = ckpt.load_latest_checkpoint(logdir / "checkpoints", map_location=device)
    if found is None:
        raise CheckpointError(f"{logdir / 'checkpoints'} holds no checkpoint; train first or check the path")
    path, payload = found
    ckpt.load_agent_state(agent, payload, path, logdir / "config.yaml")
    agent.eval()
    return Policy(agent, cfg, spec, logdir, _checkpoint_step(path))


def _with_search(cfg: Config, simulations: int) -> Config:
    """The run's config acting by tree search over its world model (see `load`)."""
    if simulations < 1:
        raise UserError(f"search must be ≥ 1 simulations (0: act without search), got {simulations}")
    if cfg.agent.family != "dreamer":
        raise UserError(f"search runs over a Dreamer world model; this run's agent.family is {cfg.agent.family}"
                        + (" (which acts by its own search already: muzero.simulations)" if cfg.agent.family == "muzero"
                           else ""))
    if cfg.behavior.kind != "actor_critic" and not cfg.behavior.planner.value:
        raise UserError("search needs the run's actor and critic (its prior and value); this run plans without "
                        "them (behavior.kind=planner, behavior.planner.value=false)")
    return config_lib.update(cfg, {"behavior.kind": "planner", "behavior.planner.kind": "search",
                                   "behavior.planner.value": True, "behavior.planner.simulations": simulations})


def _checkpoint_step(path: Path) -> int:
    """The env step in a checkpoint's name (`ckpt_{step}.pt`)."""
    return int(Path(path).stem.split("_")[1])


def evaluate(logdir: str | Path, episodes: int = 10, mode: str = "eval", env: Any = None,
             write: bool = True, video: bool = False, video_episodes: int = 1, device: str = "auto",
             on_episode: Callable[[int, float, int], None] | None = None, search: int = 0) -> dict[str, Any]:
    """Evaluate the newest checkpoint on `device`; with `write`, append the result to
    logdir/eval.json. `search` > 0: act by tree search over the world model (see `load`).

    With `video`, the first `video_episodes` episodes are written to
    `logdir/videos/eval_{i}_{step:09d}.{gif,mp4}` (see `Policy.evaluate`) and their paths are in
    the result under "videos". `on_episode(count, return, length)` is called as each episode
    finishes.
    """
    if episodes < 1:
        raise UserError(f"episodes must be ≥ 1, got {episodes}")
    policy = load(logdir, env, device, search)
    result = policy.evaluate(episodes, mode, video=bool(video), video_episodes=video_episodes,
                             on_episode=on_episode)
    if write:
        path = Path(logdir) / "eval.json"
        history = json.loads(path.read_text()) if path.exists() else []
        row = {k: v for k, v in result.items() if k != "video_note"}
        history.append({"step": policy.step, "mode": mode, **({"search": search} if search else {}), **row})
        ckpt.atomic_write_bytes(path, json.dumps(history, indent=1).encode())
    return result
