"""Typed configuration: dataclasses, named presets composed in order, then `key=value` overrides.

A config is a tree of dataclasses (`schema.py`) whose defaults are the current DreamerV3's values:
the one place a default is written. Presets are YAML files in `reverie/config/presets/` whose keys
are dotted paths (`model.rssm.deter: 512`); a key may hold `*` wildcards (`"*.units": 64`) to set
every matching field, as the size presets do. Overrides on the command line use the same paths.
Unknown keys and values of the wrong type raise `ConfigError` naming the key. Dotted paths
are in `keys.py`; reading preset files and resolving their `_include` and `_reset`, in `preset_files.py`.

Besides config keys a preset may hold:

- `_kind`: agent | size | suite. `compose_presets` puts the default preset of each kind the user
  did not name (agent `dreamerv3`, the env's suite) before the user's presets.
- `_include: [name, ...]`: presets applied first, as part of this one: their keys count as this
  preset's (their `_kind` is ignored) and its own keys win (`classic` includes `size1m`).
- `_reset: [key, ...]`: keys (wildcards allowed) set to their schema defaults, computed from the
  dataclasses. `dreamerv3` sets no value; its `_reset` names the keys it takes back from a
  suite or size preset named before it (LaProp lr and warm-up, batch shape, ...).

Agent presets replace one another: applying one first undoes the agent presets applied before it
(every key they set returns to its value before them, unless a suite or size preset has set it
since), so `dreamerv2` then `dreamerv3` gives exactly what `dreamerv3` alone gives, in any order.
A suite preset that sets keys of a size preset named before it warns (`_warn_size_overridden`).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import fnmatch
import math
import re
import typing
from pathlib import Path
from typing import Any

import yaml

from reverie.config.keys import flatten, get, leaf_paths, set_path
from reverie.config.preset_files import (  # noqa: F401 - re-exported
    DEFAULT_PRESETS,
    PRESET_DIR,
    available_presets,
    compose_presets,
    load_preset,
    read_preset,
)
from reverie.config.schema import (  # noqa: F401 - re-exported: `from reverie.config import RSSMConfig`
    ActorConfig,
    AdamGroupConfig,
    AgentConfig,
    BehaviorConfig,
    Config,
    CriticConfig,
    DecoderConfig,
    EncoderConfig,
    EnvConfig,
    ExploreConfig,
    HeadConfig,
    KernelConfig,
    LossScales,
    ModelConfig,
    OptimConfig,
    PlannerConfig,
    ReplayConfig,
    ReturnNormConfig,
    RSSMConfig,
    RunConfig,
)
from reverie.errors import ConfigError, plural, warn

# --------------------------------------------------------------------------------------------
# Values and types

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
    except (ValueError, TypeError, OverflowError, yaml.YAMLError):  # OverflowError: float(10**400)
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


def update(cfg: Config, values: dict[str, Any], source: str = "override", touched: set[str] | None = None) -> Config:
    """Set dotted (possibly wildcard) keys in place; raise `ConfigError` for unknown keys. The
    leaf paths set are added to `touched` when it is given."""
    paths = leaf_paths(cfg)
    for key, value in flatten(values).items():
        matches = [p for p in paths if fnmatch.fnmatchcase(p, key)] if "*" in key else [key]
        if not matches or ("*" not in key and key not in paths):
            hint = difflib.get_close_matches(key, list(paths), n=1)
            fix = f"did you mean '{hint[0]}'?" if hint else "`reverie config` prints every key"
            raise ConfigError(f"unknown config key '{key}' in {source}; {fix}")
        for path in matches:
            set_path(cfg, path, coerce(path, paths[path], value))
        if touched is not None:
            touched.update(matches)
    return cfg


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
    source: str = "override",
) -> Config:
    """Default config, then the named presets in order, then `key=value` overrides (`source`
    names where they came from in errors).

    Callers that want the default presets (agent `dreamerv3`, suite `classic`) for the kinds the
    user did not name pass `compose_presets(names)`.
    """
    cfg = base or Config()
    size_keys: dict[str, str] = {}  # leaf path -> the size preset that set it
    agent_keys: dict[str, Any] = {}  # leaf path the agent preset set -> its value before it
    for name in presets:
        values = load_preset(name)
        kind = values.pop("_kind", None)
        if kind == "agent":
            agent_keys = _replace_agent(cfg, values, f"preset '{name}'", agent_keys)
            continue
        touched: set[str] = set()
        update(cfg, values, source=f"preset '{name}'", touched=touched)
        for path in touched:  # the key is this preset's now: a later agent preset keeps it
            agent_keys.pop(path, None)
        if kind == "size":
            size_keys.update(dict.fromkeys(touched, name))
        elif kind == "suite":
            _warn_size_overridden(name, {p: size_keys.pop(p) for p in sorted(touched & size_keys.keys())})
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    if overrides:
        update(cfg, overrides, source=source)
    validate(cfg)
    return cfg


def _replace_agent(cfg: Config, values: dict[str, Any], source: str, earlier: dict[str, Any]) -> dict[str, Any]:
    """Undo the agent presets applied before (`earlier`: each key they set, with its value
    before them), then apply this one's `values`; returns the same map for it."""
    for path, value in earlier.items():
        set_path(cfg, path, value)
    before = copy.deepcopy(cfg)
    touched: set[str] = set()
    update(cfg, values, source=source, touched=touched)
    return {path: get(before, path) for path in touched}


def _warn_size_overridden(suite: str, overridden: dict[str, str]) -> None:
    """A suite preset named after a size preset sets some of its keys again: say which."""
    for size in dict.fromkeys(overridden.values()):
        keys = [p for p, s in overridden.items() if s == size]
        shown = ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
        warn(f"suite preset '{suite}' overrides {plural(len(keys), 'key')} of the size "
             f"preset '{size}' named before it ({shown}); name the size preset after the suite preset")


HEAD_DISTS = ("twohot", "twohot_symlog", "mse")


def validate(cfg: Config) -> None:
    """Cross-field checks that a type alone does not express."""
    checks = [
        (cfg.batch_size >= 1, "batch_size must be ≥ 1"),
        (cfg.batch_length >= 2, "batch_length must be ≥ 2"),
        (cfg.env.num_envs >= 1, "env.num_envs must be ≥ 1"),
        (cfg.env.backend in ("inline", "process", "ray"), "env.backend must be inline, process or ray"),
        (min(cfg.env.policy_every, cfg.env.actor_queue) >= 1, "env.policy_every and env.actor_queue must be ≥ 1"),
        (cfg.env.action_repeat >= 1, "env.action_repeat must be ≥ 1"),
        (cfg.run.report_sequences >= 1, "run.report_sequences must be ≥ 1"),
        (min(cfg.env.size) >= 8, "env.size must be at least [8, 8] pixels"),
        (cfg.env.noops >= 0, "env.noops must be ≥ 0"),
        (cfg.env.proprio or cfg.env.image, "env.proprio and env.image cannot both be false"),
        (cfg.run.train_ratio > 0, "run.train_ratio must be > 0"),
        (cfg.run.precision in ("float32", "bfloat16"), "run.precision must be float32 or bfloat16"),
        (re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", cfg.run.device) is not None,
         f"run.device '{cfg.run.device}' is not a device; use auto, cpu, cuda, cuda:N or mps"),
        (cfg.model.rssm.blocks >= 1 and cfg.model.rssm.deter % cfg.model.rssm.blocks == 0,
         f"model.rssm.deter ({cfg.model.rssm.deter}) must be divisible by model.rssm.blocks "
         f"({cfg.model.rssm.blocks}, ≥ 1)"),
        (cfg.model.norm in ("rms", "layer", "none"), "model.norm must be rms, layer or none"),
        (cfg.model.encoder.resize in ("pool", "stride"), "model.encoder.resize must be pool or stride"),
        (cfg.model.decoder.resize in ("pool", "stride"), "model.decoder.resize must be pool or stride"),
        (cfg.replay.capacity >= cfg.batch_length, "replay.capacity must be ≥ batch_length"),
        (cfg.behavior.imag_horizon >= 1, "behavior.imag_horizon must be ≥ 1"),
        (cfg.run.steps >= 1, "run.steps must be ≥ 1 env step"),
        (cfg.run.keep_checkpoints >= 1, "run.keep_checkpoints must be ≥ 1"),
        (cfg.run.threads >= 0, "run.threads must be ≥ 0 (0: as many as the cores other processes leave free)"),
        (cfg.run.max_nonfinite_updates >= 0, "run.max_nonfinite_updates must be ≥ 0 (0 never stops)"),
        (cfg.replay.storage in ("memory", "disk"), f"replay.storage must be memory or disk, got {cfg.replay.storage!r}"),
        (cfg.replay.chunk_length >= 1, "replay.chunk_length must be ≥ 1"),
        (cfg.replay.context >= 0, "replay.context must be ≥ 0 (1: start from the stored latent, 0: from zeros)"),
        (cfg.replay.capacity >= cfg.batch_length + cfg.replay.context,
         "replay.capacity must be ≥ batch_length + replay.context"),
        (cfg.run.train_every >= 1, "run.train_every must be ≥ 1"),
        (cfg.env.max_restarts >= 0, "env.max_restarts must be ≥ 0 (0 stops the run at the first env fault)"),
        (cfg.model.rssm.latent in ("categorical", "gaussian"), "model.rssm.latent must be categorical or gaussian"),
        (cfg.model.rssm.core in ("block", "gru"), "model.rssm.core must be block or gru"),
        (cfg.model.rssm.block_fan_in in ("layer", "block"), "model.rssm.block_fan_in must be layer or block"),
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
        (cfg.behavior.planner.kind in ("cem", "mppi", "search"), "behavior.planner.kind must be cem, mppi or search"),
        (cfg.behavior.planner.kind != "search" or (cfg.behavior.planner.value and cfg.behavior.planner.simulations >= 1
                                                   and cfg.behavior.planner.tree in ("gumbel", "muzero")),
         ("behavior.planner.kind=search needs behavior.planner.value=true (the actor is its prior, the critic its "
          "value), behavior.planner.simulations ≥ 1 and behavior.planner.tree gumbel or muzero")),
        (cfg.behavior.planner.kind != "mppi" or (
            1 <= cfg.behavior.planner.top_k <= cfg.behavior.planner.candidates
            and 0 <= cfg.behavior.planner.policy_samples < cfg.behavior.planner.candidates
            and 0 < cfg.behavior.planner.min_std <= cfg.behavior.planner.max_std
            and cfg.behavior.planner.temperature > 0),
         ("behavior.planner with kind=mppi needs 1 ≤ top_k ≤ candidates, 0 ≤ policy_samples < candidates, "
          "0 < min_std ≤ max_std and temperature > 0")),
        (not cfg.behavior.explore.enabled or cfg.behavior.kind == "actor_critic",
         "behavior.explore (Plan2Explore) needs behavior.kind=actor_critic: it trains a second actor-critic"),
        (not cfg.behavior.explore.enabled or cfg.behavior.explore.models >= 2,
         "behavior.explore.models must be ≥ 2: the intrinsic reward is the ensemble members' disagreement"),
        (not cfg.behavior.explore.enabled or (min(cfg.behavior.explore.extr, cfg.behavior.explore.disag) >= 0
                                              and cfg.behavior.explore.extr + cfg.behavior.explore.disag > 0),
         "behavior.explore.extr and .disag must be ≥ 0, not both 0: the exploration actor's advantage weights"),
        (cfg.behavior.explore.until >= 0, "behavior.explore.until must be ≥ 0 (0: explore for the whole run)"),
        (cfg.optim.kind in ("laprop", "adam"), "optim.kind must be laprop or adam"),
        (cfg.muzero.search in ("muzero", "gumbel"), "muzero.search must be muzero or gumbel"),
        (cfg.muzero.latent_norm in ("minmax", "none"), "muzero.latent_norm must be minmax or none"),
        (min(cfg.muzero.simulations, cfg.muzero.unroll, cfg.muzero.td_steps, cfg.muzero.target_update,
             cfg.muzero.max_considered, cfg.muzero.prefix_horizon) >= 1,
         "muzero.simulations, .unroll, .td_steps, .target_update, .max_considered and .prefix_horizon must be ≥ 1"),
        (0 <= cfg.muzero.reanalyse <= 1, "muzero.reanalyse must be a fraction of the batch in [0, 1]"),
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


# Keys that earlier versions wrote to a run's config.yaml and that no longer exist, each with why
# dropping it changes nothing; `load` drops them so that those runs still resume and evaluate.
RETIRED_KEYS = {
    "model.encoder.dist": "encoders have no likelihood; it was inherited from the decoder's fields",
    # kernels that did not save 5% of an update (benchmarks/results/kernels_ablation.md); the
    # reference path they were switched against computes the same values and gradients
    "kernels.posterior_loop": "the hoisted posterior input and weight tape did not pay",
    "kernels.rms_norm": "the hand-written RMSNorm backward did not pay",
    "kernels.twohot_loss": "the hand-written two-hot cross-entropy backward did not pay",
}


def load(path: str | Path) -> Config:
    """A run's saved config.yaml; keys in RETIRED_KEYS are dropped, any other unknown key is an error."""
    values = flatten(yaml.safe_load(Path(path).read_text()) or {})
    for key in RETIRED_KEYS:
        values.pop(key, None)
    return make_config(overrides=values, source=str(path))
