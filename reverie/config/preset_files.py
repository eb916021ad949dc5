"""Preset files (`presets/*.yaml`): reading one, resolving its `_include` and `_reset` keys into
flat values, and the default presets for the kinds a user did not name. The package docstring
says how presets compose."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

import yaml

from reverie.config.keys import flatten, get, leaf_paths
from reverie.config.schema import Config
from reverie.errors import ConfigError

PRESET_DIR = Path(__file__).parent / "presets"


def available_presets() -> list[str]:
    """The names of the preset files, sorted."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


DEFAULT_PRESETS = {"agent": "dreamerv3", "suite": "classic"}
PRESET_KEYS = ("_kind", "_include", "_reset")
KINDS = ("agent", "size", "suite")


def read_preset(name: str) -> dict[str, Any]:
    """One preset file as written: `_kind`, `_include`, `_reset` and its own config keys."""
    path = PRESET_DIR / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(
            f"unknown preset '{name}'; choose from: {', '.join(available_presets())}"
        )
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ConfigError(f"preset '{name}' ({path}) is not a mapping of config keys; write `key: value` lines")
    if values.get("_kind") not in (*KINDS, None):
        raise ConfigError(f"preset '{name}' has _kind {values['_kind']!r}; use one of {', '.join(KINDS)}")
    return values


def load_preset(name: str) -> dict[str, Any]:
    """The preset's flat values, its `_include`s and `_reset` resolved, with its `_kind`
    (agent | size | suite) under the key `_kind`."""
    return {"_kind": read_preset(name).get("_kind"), **_resolve(name, ())}


def _resolve(name: str, chain: tuple[str, ...]) -> dict[str, Any]:
    """Flat values of preset `name`: its includes in order, then its `_reset` keys at their
    defaults, then its own keys, a later key replacing an equal earlier one. `chain`: the
    presets whose `_include` led here."""
    if name in chain:
        loop = " → ".join((*chain, name))
        raise ConfigError(f"preset '{chain[0]}' includes itself ({loop}); remove one of these _include entries")
    raw = read_preset(name)
    values: dict[str, Any] = {}
    for included in _names(name, "_include", raw.get("_include", [])):
        if not (PRESET_DIR / f"{included}.yaml").exists():
            raise ConfigError(f"preset '{name}' includes unknown preset '{included}'; "
                              f"choose from: {', '.join(available_presets())}")
        _merge(values, _resolve(included, (*chain, name)))
    _merge(values, _schema_defaults(name, _names(name, "_reset", raw.get("_reset", []))))
    _merge(values, flatten({k: v for k, v in raw.items() if k not in PRESET_KEYS}))
    return values


def _names(preset: str, key: str, value: Any) -> list[str]:
    """The list under a preset's `_include` or `_reset` (one name alone is a list of one)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        example = "size1m" if key == "_include" else "optim.lr"
        raise ConfigError(f"preset '{preset}': {key} must be a list of names, e.g. {key}: [{example}]")
    return items


def _merge(values: dict[str, Any], later: dict[str, Any]) -> None:
    """Append `later`'s keys; one equal to an earlier key replaces it (and moves to the end, so
    that applying the keys in order still gives the later value)."""
    for key, value in later.items():
        values.pop(key, None)
        values[key] = value


def _schema_defaults(preset: str, keys: list[str]) -> dict[str, Any]:
    """{leaf path: its default in `Config()`} for the keys (wildcards allowed) of a `_reset`."""
    defaults = Config()
    paths = leaf_paths(defaults)
    values: dict[str, Any] = {}
    for key in keys:
        matches = [p for p in paths if fnmatch.fnmatchcase(p, key)]
        if not matches:
            raise ConfigError(f"unknown config key '{key}' in the _reset of preset '{preset}'; "
                              "`reverie config` prints every key")
        values.update({path: get(defaults, path) for path in matches})
    return values


def compose_presets(names: list[str], suite: str | None = None) -> list[str]:
    """Default presets for the kinds the user did not name, followed by the user's in order.

    `suite` replaces the default suite preset (`classic`); the env registry picks it from the env id
    (e.g. `dmc_proprio` for `dmc:walker_walk`, see `reverie.envs.default_suite_preset`).
    """
    kinds = {load_preset(n).get("_kind") for n in names}
    defaults = {**DEFAULT_PRESETS, **({"suite": suite} if suite else {})}
    return [p for kind, p in defaults.items() if kind not in kinds] + list(names)
