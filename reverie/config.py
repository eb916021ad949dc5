"""Typed configuration: dataclasses, named presets composed in order, then `key=value` overrides.

A config is a tree of dataclasses. Presets are YAML files in `reverie/presets/` whose keys are
dotted paths (`model.rssm.deter: 512`); a key may hold `*` wildcards (`"*.units": 64`) to set every
matching field, as the size presets do. Overrides on the command line use the same paths.
Unknown keys and values of the wrong type raise `ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

PRESET_DIR = Path(__file__).parent / "presets"


@dataclass
class EnvConfig:
    id: str = "CartPole-v1"  # Gymnasium id, `module:EnvId`, or a suite id such as `dmc:walker_walk`
    num_envs: int = 1  # parallel training envs; worker processes when > 1
    parallel: bool = True  # use worker processes when num_envs > 1
    max_restarts: int = 5  # rebuild an env that raises or dies, up to this many times in a row; 0 stops the run
    eval_envs: int = 1
    action_repeat: int = 1
    max_episode_steps: int = 0  # 0 keeps the env's own time limit
    # Options of the benchmark suites (dmc:, atari:, crafter); other envs ignore them.
    size: tuple[int, int] = (64, 64)  # rendered / resized image (height, width)
    gray: bool = False  # atari: greyscale frames (H, W, 1)
    sticky: bool = False  # atari: repeat the previous action with probability 0.25
    noops: int = 0  # atari: up to this many no-op actions at the start of an episode
    full_actions: bool = False  # atari: all 18 actions instead of the game's minimal set
    camera: int = -1  # dmc: camera id for the image; -1 picks the domain's default
    proprio: bool = True  # dmc: vector observations
    image: bool = True  # dmc: a rendered RGB image under the key "image"


@dataclass
class RunConfig:
    steps: int = 50_000  # total env (policy) steps of the run; a resumed run continues up to it
    prefill: int = 1000  # random-policy steps before training starts
    train_ratio: float = 512.0  # replayed steps per policy step (DESIGN §3)
    eval_every: int = 5000  # policy steps between evaluations; 0 disables
    eval_episodes: int = 10
    log_every: float = 20.0  # seconds between metric rows
    report_every: float = 300.0  # seconds between open-loop prediction reports (videos); 0 disables
    report_sequences: int = 4  # replayed sequences shown side by side in the open-loop video
    train_every: int = 1  # policy steps between training bursts (Dreamer v1: 1000 steps, then its updates)
    checkpoint_every: float = 10.0  # minutes between checkpoints
    keep_checkpoints: int = 3
    max_nonfinite_updates: int = 100  # stop after this many skipped (NaN/inf) updates in a row; 0 never stops
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch CPU threads; 0 keeps torch's default
    precision: str = "float32"  # float32 | bfloat16 (autocast)
    compile: bool = False  # torch.compile the per-step functions and the CNNs (see README, Performance)


@dataclass
class ReplayConfig:
    capacity: int = 1_000_000  # steps, FIFO
    online: bool = True  # train on every fresh sequence once before sampling uniformly
    chunk_length: int = 1024  # steps per env in each file under logdir/replay/ (a crash loses at most one)


@dataclass
class RSSMConfig:
    deter: int = 512
    hidden: int = 64
    stoch: int = 32  # number of categorical latents
    classes: int = 4  # classes per latent
    blocks: int = 8  # block-diagonal GRU groups
    unimix: float = 0.01
    img_layers: int = 2
    obs_layers: int = 1
    dyn_layers: int = 1
    free_nats: float = 1.0
    free_average: bool = False  # clip the batch-mean KL at free_nats (DreamerV1/V2) instead of each step's
    latent: str = "categorical"  # categorical (stoch × classes) | gaussian (stoch Normal dims; classes unused)
    min_std: float = 0.1  # gaussian latents: std = softplus(x) + min_std
    core: str = "block"  # block: the current block GRU | gru: one GRU cell over a joint (z, a) projection (2023, V2, V1)
    cell_norm: str = ""  # norm of the gru core's gates; empty = model.norm (V2 norms them although model.norm is none)
    initial: str = "zeros"  # zeros | learned: h_0 = tanh(w), z_0 = prior mode (DreamerV3 2023)


@dataclass
class EncoderConfig:
    mlp_keys: str = ".*"  # regex over observation keys routed to the MLP (non-image keys)
    cnn_keys: str = ".*"  # regex over observation keys routed to the CNN (3-D uint8 keys)
    units: int = 64
    layers: int = 3
    depth: int = 4  # CNN channels = depth × mults
    mults: tuple[int, ...] = (2, 3, 4, 4)
    kernel: int = 5
    resize: str = "pool"  # CNN stages: pool (conv + 2×2 max-pool) | stride (stride-2 conv, DreamerV3 2023)
    symlog: bool = True  # symlog-squash vector inputs


@dataclass
class DecoderConfig(EncoderConfig):
    block_space: int = 8  # block groups of the deter → spatial projection (image decoder)
    dist: str = "mse"  # mse (sum of squared errors) | normal (unit-variance Normal NLL, V1/V2)


@dataclass
class HeadConfig:
    units: int = 64
    layers: int = 1
    bins: int = 255
    outscale: float = 1.0
    dist: str = "twohot"  # reward head: twohot (symexp bins) | twohot_symlog (2023) | mse (Normal(μ, 1), V1/V2)


@dataclass
class LossScales:
    rec: float = 1.0
    rew: float = 1.0
    con: float = 1.0
    dyn: float = 1.0
    rep: float = 0.1
    policy: float = 1.0
    value: float = 1.0
    repval: float = 0.3


@dataclass
class ModelConfig:
    act: str = "silu"
    norm: str = "rms"  # rms | layer | none
    rssm: RSSMConfig = field(default_factory=RSSMConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    reward: HeadConfig = field(default_factory=lambda: HeadConfig(outscale=0.0))
    cont: HeadConfig = field(default_factory=HeadConfig)
    contdisc: bool = True  # fold the discount into the continue target (current version)


@dataclass
class ActorConfig:
    units: int = 64
    layers: int = 3
    minstd: float = 0.1
    maxstd: float = 1.0
    unimix: float = 0.01
    outscale: float = 0.01
    entropy: float = 3e-4
    dist: str = "bounded_normal"  # continuous actions: bounded_normal (Normal(tanh μ, σ)) | tanh_normal (V1)
    init_std: float = 5.0  # tanh_normal: std = softplus(x + ln(e^init_std − 1)) + minstd
    grad: str = "reinforce"  # reinforce | dynamics (backprop through the model) | auto (dynamics if continuous)
    expl_noise: float = 0.0  # continuous: Gaussian noise added to training actions (V1: 0.3)


@dataclass
class CriticConfig:
    units: int = 64
    layers: int = 3
    bins: int = 255
    outscale: float = 0.0
    slow_rate: float = 0.02  # EMA rate of the slow critic per update (1.0 = copy)
    slow_every: int = 1  # updates between slow-critic updates (V2: copy every 100)
    slow_reg: float = 1.0  # weight of the loss towards the slow critic
    slow_target: bool = False  # bootstrap the λ-returns with the slow critic (V2's target network)
    dist: str = "twohot"  # twohot | twohot_symlog (2023) | mse (V1/V2)


@dataclass
class ReturnNormConfig:
    kind: str = "percentile"  # percentile | none (advantages unscaled, V1/V2)
    rate: float = 0.01  # EMA rate: decay 0.99
    limit: float = 1.0  # scale = max(limit, P_hi − P_lo)
    lo: float = 5.0
    hi: float = 95.0


@dataclass
class PlannerConfig:
    """CEM planning (PlaNet): reverie/planning/cem.py."""

    horizon: int = 12
    candidates: int = 1000
    iterations: int = 10
    top_k: int = 100
    value: bool = False  # add the critic's value at the horizon (trains an actor-critic too)


@dataclass
class BehaviorConfig:
    imag_horizon: int = 15
    imag_last: int = 0  # imagine from the last K posterior states of each sequence; 0 = all
    horizon: int = 333  # γ = 1 − 1/horizon
    lam: float = 0.95
    actor: ActorConfig = field(default_factory=ActorConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    retnorm: ReturnNormConfig = field(default_factory=ReturnNormConfig)
    repval: bool = True  # replay value loss
    kind: str = "actor_critic"  # actor_critic | planner (CEM on the world model, PlaNet)
    planner: PlannerConfig = field(default_factory=lambda: PlannerConfig())


@dataclass
class AdamGroupConfig:
    lr: float = 1e-4
    eps: float = 1e-8
    clip: float = 100.0  # global gradient-norm clip; 0 disables
    wd: float = 0.0  # decoupled weight decay


@dataclass
class OptimConfig:
    kind: str = "laprop"  # laprop: one optimiser (current) | adam: one per model, actor, critic (2023, V2, V1)
    lr: float = 4e-5
    eps: float = 1e-20
    beta1: float = 0.9
    beta2: float = 0.999
    agc: float = 0.3  # adaptive gradient clipping; 0 disables
    agc_pmin: float = 1e-3
    warmup: int = 1000  # linear lr warm-up in updates
    model: AdamGroupConfig = field(default_factory=lambda: AdamGroupConfig(1e-4, 1e-8, 1000.0))
    actor: AdamGroupConfig = field(default_factory=lambda: AdamGroupConfig(3e-5, 1e-5, 100.0))
    critic: AdamGroupConfig = field(default_factory=lambda: AdamGroupConfig(3e-5, 1e-5, 100.0))


@dataclass
class Config:
    seed: int = 0
    logdir: str = ""
    batch_size: int = 16
    batch_length: int = 64
    env: EnvConfig = field(default_factory=EnvConfig)
    run: RunConfig = field(default_factory=RunConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    behavior: BehaviorConfig = field(default_factory=BehaviorConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss_scales: LossScales = field(default_factory=LossScales)


# --------------------------------------------------------------------------------------------
# Paths, values and types


def leaf_paths(cfg: Any, prefix: str = "") -> dict[str, type]:
    """Every dotted leaf path of a config tree with its declared type."""
    hints = typing.get_type_hints(type(cfg))
    paths: dict[str, type] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        path = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            paths.update(leaf_paths(value, path + "."))
        else:
            paths[path] = hints[f.name]
    return paths


def get(cfg: Any, path: str) -> Any:
    for part in path.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _set(cfg: Any, path: str, value: Any) -> None:
    *parents, name = path.split(".")
    for part in parents:
        cfg = getattr(cfg, part)
    setattr(cfg, name, value)


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def coerce(path: str, kind: Any, value: Any) -> Any:
    """Convert `value` (from YAML or a command-line string) to the declared type or raise."""
    origin = typing.get_origin(kind)
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
                return value.lower() in _TRUE
            raise ValueError
        if kind is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, str):
                value = float(value) if any(c in value.lower() for c in ".e") else int(value)
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if not isinstance(value, int):
                raise ValueError
            return value
        if kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise ValueError
            number = float(value)
            if not math.isfinite(number):  # NaN or inf would silently poison the training
                raise ValueError
            return number
        if kind is str:
            if not isinstance(value, str):
                raise ValueError
            return value
        if origin is tuple:
            args = typing.get_args(kind)
            if isinstance(value, str):
                value = yaml.safe_load(value if value.strip().startswith("[") else f"[{value}]")
            if not isinstance(value, (list, tuple)):
                raise ValueError
            item = args[0]
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(coerce(path, item, v) for v in value)
            if len(value) != len(args):
                raise ValueError
            return tuple(coerce(path, a, v) for a, v in zip(args, value))
    except (ValueError, TypeError, yaml.YAMLError):
        pass
    else:
        raise ConfigError(f"config key '{path}' has an unsupported type {kind}")
    name = "a finite float" if kind is float else getattr(kind, "__name__", str(kind))
    raise ConfigError(
        f"config key '{path}' expects {name}, got {value!r}; fix the value, e.g. {path}={get_example(kind)}"
    )


def get_example(kind: Any) -> str:
    if kind is bool:
        return "true"
    if kind is int:
        return "4"
    if kind is float:
        return "0.5"
    if typing.get_origin(kind) is tuple:
        return "[64,64]"
    return "text"


# --------------------------------------------------------------------------------------------
# Applying presets and overrides


def update(cfg: Config, values: dict[str, Any], source: str = "override") -> Config:
    """Set dotted (possibly wildcard) keys in place; raise `ConfigError` for unknown keys."""
    paths = leaf_paths(cfg)
    for key, value in _flatten(values).items():
        matches = [p for p in paths if fnmatch.fnmatchcase(p, key)] if "*" in key else [key]
        if not matches or ("*" not in key and key not in paths):
            hint = difflib.get_close_matches(key, list(paths), n=1)
            fix = f"did you mean '{hint[0]}'?" if hint else "`reverie config` prints every key"
            raise ConfigError(f"unknown config key '{key}' in {source}; {fix}")
        for path in matches:
            _set(cfg, path, coerce(path, paths[path], value))
    return cfg


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        key = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, key + "."))
        else:
            flat[key] = value
    return flat


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


DEFAULT_PRESETS = {"agent": "dreamerv3", "suite": "classic"}


def load_preset(name: str) -> dict[str, Any]:
    """The preset's values, with its `_kind` (agent | size | suite) under the key `_kind`."""
    path = PRESET_DIR / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(
            f"unknown preset '{name}'; choose from: {', '.join(available_presets())}"
        )
    return yaml.safe_load(path.read_text()) or {}


def compose_presets(names: list[str], suite: str | None = None) -> list[str]:
    """Default presets for the kinds the user did not name, followed by the user's in order.

    `suite` replaces the default suite preset (`classic`); the env registry picks it from the env id
    (e.g. `dmc_proprio` for `dmc:walker_walk`, see `reverie.envs.default_suite_preset`).
    """
    kinds = {load_preset(n).get("_kind") for n in names}
    defaults = {**DEFAULT_PRESETS, **({"suite": suite} if suite else {})}
    return [p for kind, p in defaults.items() if kind not in kinds] + list(names)


def parse_overrides(items: list[str]) -> dict[str, str]:
    overrides = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value, e.g. run.train_ratio=64")
        key, value = item.split("=", 1)
        overrides[key.strip()] = value
    return overrides


def make_config(
    presets: list[str] = (),
    overrides: dict[str, Any] | list[str] | None = None,
    base: Config | None = None,
) -> Config:
    """Default config, then the named presets in order, then `key=value` overrides.

    Callers that want the default presets (agent `dreamerv3`, suite `classic`) for the kinds the
    user did not name pass `compose_presets(names)`.
    """
    cfg = base or Config()
    for name in presets:
        values = load_preset(name)
        values.pop("_kind", None)
        update(cfg, values, source=f"preset '{name}'")
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    if overrides:
        update(cfg, overrides)
    validate(cfg)
    return cfg


HEAD_DISTS = ("twohot", "twohot_symlog", "mse")


def validate(cfg: Config) -> None:
    """Cross-field checks that a type alone does not express."""
    checks = [
        (cfg.batch_size >= 1, "batch_size must be ≥ 1"),
        (cfg.batch_length >= 2, "batch_length must be ≥ 2"),
        (cfg.env.num_envs >= 1, "env.num_envs must be ≥ 1"),
        (cfg.env.action_repeat >= 1, "env.action_repeat must be ≥ 1"),
        (cfg.run.report_sequences >= 1, "run.report_sequences must be ≥ 1"),
        (min(cfg.env.size) >= 8, "env.size must be at least [8, 8] pixels"),
        (cfg.env.noops >= 0, "env.noops must be ≥ 0"),
        (cfg.env.proprio or cfg.env.image, "env.proprio and env.image cannot both be false"),
        (cfg.run.train_ratio > 0, "run.train_ratio must be > 0"),
        (cfg.run.precision in ("float32", "bfloat16"), "run.precision must be float32 or bfloat16"),
        (cfg.model.rssm.deter % cfg.model.rssm.blocks == 0,
         "model.rssm.deter must be divisible by model.rssm.blocks"),
        (cfg.model.norm in ("rms", "layer", "none"), "model.norm must be rms, layer or none"),
        (cfg.model.encoder.resize in ("pool", "stride"), "model.encoder.resize must be pool or stride"),
        (cfg.model.decoder.resize in ("pool", "stride"), "model.decoder.resize must be pool or stride"),
        (cfg.replay.capacity >= cfg.batch_length, "replay.capacity must be ≥ batch_length"),
        (cfg.behavior.imag_horizon >= 1, "behavior.imag_horizon must be ≥ 1"),
        (cfg.run.steps >= 1, "run.steps must be ≥ 1 env step"),
        (cfg.run.keep_checkpoints >= 1, "run.keep_checkpoints must be ≥ 1"),
        (cfg.run.max_nonfinite_updates >= 0, "run.max_nonfinite_updates must be ≥ 0 (0 never stops)"),
        (cfg.replay.chunk_length >= 1, "replay.chunk_length must be ≥ 1"),
        (cfg.run.train_every >= 1, "run.train_every must be ≥ 1"),
        (cfg.env.max_restarts >= 0, "env.max_restarts must be ≥ 0 (0 stops the run at the first env fault)"),
        (cfg.model.rssm.latent in ("categorical", "gaussian"), "model.rssm.latent must be categorical or gaussian"),
        (cfg.model.rssm.core in ("block", "gru"), "model.rssm.core must be block or gru"),
        (cfg.model.rssm.initial in ("zeros", "learned"), "model.rssm.initial must be zeros or learned"),
        (cfg.model.rssm.cell_norm in ("", "rms", "layer", "none"), "model.rssm.cell_norm must be empty, rms, layer or none"),
        (cfg.model.decoder.dist in ("mse", "normal"), "model.decoder.dist must be mse or normal"),
        (cfg.model.reward.dist in HEAD_DISTS, f"model.reward.dist must be one of {', '.join(HEAD_DISTS)}"),
        (cfg.behavior.critic.dist in HEAD_DISTS, f"behavior.critic.dist must be one of {', '.join(HEAD_DISTS)}"),
        (cfg.behavior.actor.dist in ("bounded_normal", "tanh_normal"),
         "behavior.actor.dist must be bounded_normal or tanh_normal"),
        (cfg.behavior.actor.grad in ("reinforce", "dynamics", "auto"),
         "behavior.actor.grad must be reinforce, dynamics or auto"),
        (cfg.behavior.critic.slow_every >= 1, "behavior.critic.slow_every must be ≥ 1"),
        (cfg.behavior.retnorm.kind in ("percentile", "none"), "behavior.retnorm.kind must be percentile or none"),
        (cfg.behavior.kind in ("actor_critic", "planner"), "behavior.kind must be actor_critic or planner"),
        (cfg.optim.kind in ("laprop", "adam"), "optim.kind must be laprop or adam"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def to_dict(cfg: Any) -> dict[str, Any]:
    def convert(value):
        if isinstance(value, tuple):
            return list(value)
        return value

    return {
        f.name: to_dict(getattr(cfg, f.name))
        if dataclasses.is_dataclass(getattr(cfg, f.name))
        else convert(getattr(cfg, f.name))
        for f in dataclasses.fields(cfg)
    }


def save(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def load(path: str | Path) -> Config:
    return make_config(overrides=yaml.safe_load(Path(path).read_text()) or {})
