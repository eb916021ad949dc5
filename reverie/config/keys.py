"""Dotted paths into a config tree: every leaf path with its type, and reading, setting and
flattening values by path."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any


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
    """The value at a dotted leaf path."""
    for part in path.split("."):
        cfg = getattr(cfg, part)
    return cfg


def set_path(cfg: Any, path: str, value: Any) -> None:
    """Set the value at a dotted leaf path (no type check: see `reverie.config.update`)."""
    *parents, name = path.split(".")
    for part in parents:
        cfg = getattr(cfg, part)
    setattr(cfg, name, value)


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one mapping of dotted keys, in order: `{"a": {"b": 1}}` → `{"a.b": 1}`."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        key = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, key + "."))
        else:
            flat[key] = value
    return flat
