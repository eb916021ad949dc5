"""Observation and action spaces as Reverie sees them, converted from Gymnasium spaces.

Observations become a flat dict of arrays (DESIGN §3):

- a uint8 ``Box`` of shape (H, W, C) with C in {1, 3, 4}, or (H, W), is an image: uint8 (H, W, C),
  a 2-D image gets a trailing channel of 1;
- any other ``Box`` is flattened to a float32 vector;
- ``Discrete(n)`` is a one-hot float32 vector (n,), ``MultiDiscrete`` concatenated one-hots; their
  ``ArraySpec.classes`` records the class count of each one-hot block ((n,), or the flattened nvec),
  which marks the key categorical: the encoder takes it as the one-hot itself (no symlog) and the
  decoder predicts it with one softmax per block, trained with cross-entropy (as the official
  DreamerV3 code treats integer observations);
- ``MultiBinary`` is a flattened float32 vector of 0/1 (a continuous key);
- ``Dict`` and ``Tuple`` spaces, nested in any combination, are flattened into one key per leaf,
  each converted by the rules above, in the space's own order (Dict entries as the Dict orders them,
  Tuple entries by index). A key joins the path to its leaf with "/": Dict entry names as they are,
  Tuple indices as numbers, and a top-level Tuple starts the path with "obs". So Dict({"a": Dict({"b":
  ...})}) gives "a/b", Dict({"a": Tuple((Box, Discrete))}) gives "a/0" and "a/1", Tuple((Dict({"x":
  ...}), Box)) gives "obs/0/x" and "obs/1", and Blackjack's Tuple(Discrete(32), Discrete(11),
  Discrete(2)) gives "obs/0" (32,), "obs/1" (11,) and "obs/2" (2,). A space with neither uses the
  key "image" or "vector".

Actions: the agent always emits a flat float32 vector (A,). For ``Discrete``, ``MultiDiscrete`` and
``MultiBinary`` spaces it is one one-hot block per dimension; for ``Box`` it lives in [-1, 1] and is
rescaled linearly to the env's [low, high]. A dimension whose bound is infinite on either side is
not rescaled: the env gets the clipped [-1, 1] value (clipped again into a half-finite bound).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from reverie.errors import EnvError

STEP_KEYS = ("reward", "is_first", "is_last", "is_terminal")  # every step dict holds these
RESERVED_KEYS = (*STEP_KEYS, "action")
"""Step-dict fields that an observation key may not use."""

_SUPPORTED_OBS = "Box, Discrete, MultiDiscrete, MultiBinary, and Dict or Tuple spaces of these, nested freely"
_SUPPORTED_ACT = "Discrete, MultiDiscrete, MultiBinary and Box"


@dataclass(frozen=True)
class ArraySpec:
    """Shape and dtype of one observation key, per env step (no batch axis).

    ``classes`` is non-empty for a categorical key (Discrete, MultiDiscrete): the key is a float32
    vector of concatenated one-hot blocks, block i holding ``classes[i]`` classes, so
    ``shape == (sum(classes),)``. It is () for every other key. (Default (): a spec pickled before
    the field existed reads as non-categorical.)
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    classes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        object.__setattr__(self, "classes", tuple(int(n) for n in self.classes))
        if self.classes:
            if min(self.classes) < 1:
                raise ValueError(f"ArraySpec classes must be >= 1, got {self.classes}")
            if self.shape != (sum(self.classes),) or self.dtype != np.float32:
                raise ValueError(f"a categorical ArraySpec with classes {self.classes} is a float32 vector of "
                                 f"shape ({sum(self.classes)},), got {self.shape} {self.dtype}")

    @property
    def categorical(self) -> bool:
        """True for concatenated one-hot blocks (Discrete, MultiDiscrete observations)."""
        return bool(self.classes)

    @property
    def is_image(self) -> bool:
        """True for uint8 (H, W, C) arrays, which go to the CNN encoder."""
        return self.dtype == np.uint8 and len(self.shape) == 3


@dataclass(frozen=True)
class ActionSpace:
    """The env's action space and its mapping to the agent's flat float32 action vector (A,).

    ``kind`` is "discrete" or "continuous". Discrete: ``sizes`` holds the class count of each
    dimension (Discrete(n) -> (n,), MultiDiscrete([3, 4]) -> (3, 4), MultiBinary(2) -> (2, 2)),
    ``start`` the env's first class value per dimension and ``shape`` the env's action shape
    (() for Discrete, which takes a Python int). Continuous: ``low``/``high`` are the flattened Box
    bounds, ``shape`` the Box shape, ``sizes`` is ().
    """

    kind: str
    sizes: tuple[int, ...] = ()
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()
    shape: tuple[int, ...] = ()
    dtype: np.dtype | None = None  # the env's action dtype; None: int64 (discrete) / float32 (continuous)
    start: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("discrete", "continuous"):
            raise ValueError(f"ActionSpace kind must be 'discrete' or 'continuous', got {self.kind!r}")
        object.__setattr__(self, "sizes", tuple(int(n) for n in self.sizes))
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        object.__setattr__(self, "low", tuple(float(v) for v in self.low))
        object.__setattr__(self, "high", tuple(float(v) for v in self.high))
        default_dtype = np.int64 if self.kind == "discrete" else np.float32
        object.__setattr__(self, "dtype", np.dtype(default_dtype if self.dtype is None else self.dtype))
        if self.discrete:
            if not self.sizes or min(self.sizes) < 1:
                raise ValueError(f"a discrete ActionSpace needs class counts >= 1, got {self.sizes}")
            start = tuple(int(s) for s in self.start) or (0,) * len(self.sizes)
            if len(start) != len(self.sizes):
                raise ValueError("ActionSpace start must have one entry per discrete dimension")
            object.__setattr__(self, "start", start)
        else:
            count = int(np.prod(self.shape))
            if len(self.low) != count or len(self.high) != count:
                raise ValueError(f"ActionSpace low/high need {count} entries for shape {self.shape}")

    @property
    def discrete(self) -> bool:
        return self.kind == "discrete"

    @property
    def dim(self) -> int:
        """Size A of the agent's flat action vector."""
        return sum(self.sizes) if self.discrete else int(np.prod(self.shape))

    def to_env(self, vec: np.ndarray) -> Any:
        """Agent vector (A,) -> env action (int, int array, or Box-shaped array of the Box dtype)."""
        vec = np.asarray(vec, dtype=np.float32)
        if vec.shape != (self.dim,):
            raise ValueError(f"expected an action vector of shape ({self.dim},), got {vec.shape}")
        if self.discrete:
            bounds = np.cumsum((0,) + self.sizes)  # block edges
            index = np.array([np.argmax(vec[a:b]) for a, b in zip(bounds[:-1], bounds[1:])])
            index = index + np.asarray(self.start)
            if self.shape == ():
                return int(index[0])
            return index.reshape(self.shape).astype(self.dtype)
        low, high = np.asarray(self.low), np.asarray(self.high)  # float64 (A,)
        x = np.clip(vec.astype(np.float64), -1.0, 1.0)
        finite = np.isfinite(low) & np.isfinite(high)
        with np.errstate(invalid="ignore", over="ignore"):
            scaled = low + (x + 1.0) * 0.5 * (high - low)
        out = np.clip(np.where(finite, scaled, x), low, high)
        if np.issubdtype(self.dtype, np.integer):
            out = np.round(out)
        return out.reshape(self.shape).astype(self.dtype)

    def from_env(self, action: Any) -> np.ndarray:
        """Env action -> agent vector (A,) float32; the inverse of ``to_env``."""
        if self.discrete:
            index = np.asarray(action, dtype=np.int64).reshape(-1) - np.asarray(self.start)
            if index.shape != (len(self.sizes),):
                raise ValueError(f"expected {len(self.sizes)} discrete action values, got {index.size}")
            out = np.zeros(self.dim, np.float32)
            offsets = np.cumsum((0,) + self.sizes[:-1])
            out[offsets + index] = 1.0
            return out
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        low, high = np.asarray(self.low), np.asarray(self.high)
        finite = np.isfinite(low) & np.isfinite(high)
        width = np.where(finite & (high > low), high - low, 1.0)
        with np.errstate(invalid="ignore", over="ignore"):
            scaled = np.where(high > low, 2.0 * (a - low) / width - 1.0, 0.0)
        out = np.where(finite, scaled, a)
        return np.clip(out, -1.0, 1.0).astype(np.float32)

    def sample_random(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Uniform random agent actions (n, A): one-hots per block, or uniform in [-1, 1]."""
        if not self.discrete:
            return rng.uniform(-1.0, 1.0, size=(n, self.dim)).astype(np.float32)
        out = np.zeros((n, self.dim), np.float32)
        offset = 0
        for size in self.sizes:
            out[np.arange(n), offset + rng.integers(0, size, size=n)] = 1.0
            offset += size
        return out


def _describe(space: Any) -> str:
    text = repr(space)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_image_box(space: gym.spaces.Box) -> bool:
    shape = space.shape
    if space.dtype != np.uint8:
        return False
    return len(shape) == 2 or (len(shape) == 3 and shape[2] in (1, 3, 4))


@dataclass(frozen=True)
class _ObsEntry:
    """How one leaf of the observation space becomes one key of the step dict."""

    key: str
    path: tuple[tuple[str, Any], ...]  # ("dict", name) or ("tuple", index) per nesting level; () at top level
    kind: str  # image | box | discrete | multidiscrete | multibinary
    spec: ArraySpec
    nvec: tuple[int, ...] = ()  # class counts, flattened (discrete kinds)
    start: tuple[int, ...] = ()  # first class value, flattened (discrete kinds)


def _leaf_entry(key: str, path: tuple[tuple[str, Any], ...], space: Any, where: str) -> _ObsEntry:
    """One leaf space -> its ``_ObsEntry``; an unsupported space raises ``EnvError`` naming ``where``."""
    if isinstance(space, gym.spaces.Box):
        if _is_image_box(space):
            h, w = space.shape[:2]
            c = space.shape[2] if len(space.shape) == 3 else 1
            return _ObsEntry(key, path, "image", ArraySpec((h, w, c), np.uint8))
        return _ObsEntry(key, path, "box", ArraySpec((int(np.prod(space.shape)),), np.float32))
    if isinstance(space, gym.spaces.Discrete):
        n = int(space.n)
        return _ObsEntry(key, path, "discrete", ArraySpec((n,), np.float32, (n,)), (n,), (int(space.start),))
    if isinstance(space, gym.spaces.MultiDiscrete):
        nvec = tuple(int(n) for n in np.asarray(space.nvec).reshape(-1))
        start = tuple(int(s) for s in np.asarray(space.start).reshape(-1))
        return _ObsEntry(key, path, "multidiscrete", ArraySpec((sum(nvec),), np.float32, nvec), nvec, start)
    if isinstance(space, gym.spaces.MultiBinary):
        size = int(np.prod(space.shape))
        return _ObsEntry(key, path, "multibinary", ArraySpec((size,), np.float32))
    raise EnvError(
        f"{where} {_describe(space)} is not supported: Reverie handles {_SUPPORTED_OBS}; "
        "wrap the env to convert it (e.g. gymnasium.wrappers.TransformObservation)"
    )


def _path_key(path: tuple[tuple[str, Any], ...]) -> str:
    """Observation key of a nesting path: names and indices joined with "/", "obs/" first under a Tuple."""
    parts = [str(name) for _, name in path]
    return "/".join(["obs"] + parts if path[0][0] == "tuple" else parts)


def _collect(space: Any, path: tuple[tuple[str, Any], ...], out: list[_ObsEntry]) -> None:
    """Append one ``_ObsEntry`` per leaf of ``space`` (depth first, in the space's order) to ``out``."""
    if isinstance(space, gym.spaces.Dict):
        for name, sub in space.spaces.items():
            _collect(sub, path + (("dict", name),), out)
        return
    if isinstance(space, gym.spaces.Tuple):
        for index, sub in enumerate(space.spaces):
            _collect(sub, path + (("tuple", index),), out)
        return
    if path:
        key = _path_key(path)
        where = f"observation entry {key!r} has space"
    else:
        key = "image" if isinstance(space, gym.spaces.Box) and _is_image_box(space) else "vector"
        where = "observation space"
    out.append(_leaf_entry(key, path, space, where))


class ObsConverter:
    """Converts raw Gymnasium observations to Reverie's flat dict of arrays.

    ``converter.spec`` is the dict of ``ArraySpec`` per key; ``converter(raw_obs)`` converts one
    observation (no batch axis).
    """

    def __init__(self, space: gym.Space):
        entries: list[_ObsEntry] = []
        _collect(space, (), entries)
        if not entries:
            raise EnvError(
                "the observation space is an empty Dict or Tuple: give the env at least one observation entry"
            )
        seen: set[str] = set()
        for entry in entries:
            if entry.key in RESERVED_KEYS:
                raise EnvError(
                    f"observation key {entry.key!r} is reserved for the step dict "
                    f"(reserved: {', '.join(RESERVED_KEYS)}); rename that entry of the env's Dict observation space"
                )
            if entry.key in seen:
                raise EnvError(
                    f"observation key {entry.key!r} occurs twice after joining nested Dict keys and Tuple "
                    "indices with '/'; rename one"
                )
            seen.add(entry.key)
        self.entries = tuple(entries)
        self.spec: dict[str, ArraySpec] = {e.key: e.spec for e in entries}

    def __call__(self, raw_obs: Any) -> dict[str, np.ndarray]:
        return {entry.key: _convert_leaf(entry, _lookup(raw_obs, entry.path)) for entry in self.entries}


def _lookup(raw_obs: Any, path: tuple[tuple[str, Any], ...]) -> Any:
    """The leaf value at ``path`` in a raw observation of nested dicts and tuples (or lists, arrays)."""
    value = raw_obs
    for depth, (kind, name) in enumerate(path, 1):
        if kind == "dict":
            found = isinstance(value, Mapping) and name in value
        else:  # a tuple, list or array of at least 1-D, as gymnasium's Tuple.contains accepts
            sequence = isinstance(value, (tuple, list)) or (isinstance(value, np.ndarray) and value.ndim > 0)
            found = sequence and 0 <= name < len(value)
        if not found:
            where, space = _path_key(path[:depth]), "Dict" if kind == "dict" else "Tuple"
            raise EnvError(f"observation is missing entry {where!r} declared by its {space} space")
        value = value[name]
    return value


def _convert_leaf(entry: _ObsEntry, value: Any) -> np.ndarray:
    shape = entry.spec.shape
    if entry.kind == "image":
        array = np.asarray(value, dtype=np.uint8)
        if array.ndim == 2:
            array = array[..., None]  # (H, W) -> (H, W, 1)
    elif entry.kind in ("box", "multibinary"):
        array = np.asarray(value, dtype=np.float32).reshape(-1)
    else:  # one-hot per discrete dimension
        index = np.asarray(value, dtype=np.int64).reshape(-1) - np.asarray(entry.start)
        nvec = np.asarray(entry.nvec)
        if index.shape != nvec.shape or np.any(index < 0) or np.any(index >= nvec):
            raise EnvError(f"observation {entry.key!r} value {value!r} lies outside its {entry.kind} space")
        array = np.zeros(shape, np.float32)
        array[np.cumsum(np.concatenate([[0], nvec[:-1]])) + index] = 1.0
    if array.shape != shape:
        raise EnvError(f"observation {entry.key!r} has shape {array.shape} after conversion but its space says {shape}")
    return array


def obs_spec_from_gym(space: gym.Space) -> dict[str, ArraySpec]:
    """Reverie's observation keys and their specs for a Gymnasium observation space."""
    return ObsConverter(space).spec


def convert_obs(space_or_converter: gym.Space | ObsConverter, raw_obs: Any) -> dict[str, np.ndarray]:
    """Convert one raw observation (build an ``ObsConverter`` once when converting many)."""
    converter = space_or_converter
    if not isinstance(converter, ObsConverter):
        converter = ObsConverter(converter)
    return converter(raw_obs)


def action_space_from_gym(space: gym.Space) -> ActionSpace:
    """Reverie's ``ActionSpace`` for a Gymnasium action space."""
    if isinstance(space, gym.spaces.Discrete):
        return ActionSpace("discrete", sizes=(int(space.n),), shape=(), dtype=space.dtype, start=(int(space.start),))
    if isinstance(space, gym.spaces.MultiDiscrete):
        nvec = np.asarray(space.nvec)
        return ActionSpace(
            "discrete",
            sizes=tuple(nvec.reshape(-1)),
            shape=nvec.shape,
            dtype=space.dtype,
            start=tuple(np.asarray(space.start).reshape(-1)),
        )
    if isinstance(space, gym.spaces.MultiBinary):
        shape = tuple(space.shape)
        return ActionSpace("discrete", sizes=(2,) * int(np.prod(shape)), shape=shape, dtype=space.dtype)
    if isinstance(space, gym.spaces.Box):
        return ActionSpace(
            "continuous",
            low=tuple(np.asarray(space.low, np.float64).reshape(-1)),
            high=tuple(np.asarray(space.high, np.float64).reshape(-1)),
            shape=tuple(space.shape),
            dtype=space.dtype,
        )
    raise EnvError(
        f"action space {_describe(space)} is not supported: Reverie handles {_SUPPORTED_ACT} actions; "
        "wrap the env to expose one of these (e.g. flatten a Dict/Tuple of Discretes into MultiDiscrete)"
    )
