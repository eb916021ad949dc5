"""Turn an env spec (id string, `module:EnvId`, suite id, instance, or factory) into an env factory.

Spec forms:

- ``"CartPole-v1"``: a registered Gymnasium id, made with ``gymnasium.make``;
- ``"my_package:MyEnv-v0"``: import ``my_package`` (which registers ids), then ``gymnasium.make``;
  if the id is still unknown but ``my_package.MyEnv-v0`` is an attribute that is a ``gym.Env``
  subclass or a callable, it is called with no arguments;
- ``"dmc:walker_walk"``: a suite prefix in ``SUITES`` (filled by the suite modules);
- a ``gymnasium.Env`` instance, or a zero-argument callable that returns one.

Factories built from strings are picklable, so parallel workers can build their own envs.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

from reverie.config import EnvConfig
from reverie.errors import EnvError

SuiteBuilder = Callable[[str, EnvConfig, int], gym.Env]

SUITES: dict[str, SuiteBuilder] = {}
"""Suite prefix (as in "dmc:walker_walk") -> builder(task_name, env_cfg, seed) returning a gym.Env."""

_EXAMPLES = "e.g. CartPole-v1, or `my_package:MyEnv-v0` to import your package first"


def _unknown_id_error(env_id: str) -> EnvError:
    close = difflib.get_close_matches(env_id, list(gym.registry.keys()), n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return EnvError(
        f"unknown environment '{env_id}': not a registered Gymnasium id; {hint}use a registered id ({_EXAMPLES})"
    )


def _check_registered(env_id: str) -> None:
    try:
        gym.spec(env_id)
    except gym.error.Error:
        raise _unknown_id_error(env_id) from None


def _make(env_id: str, kwargs: dict[str, Any]) -> gym.Env:
    try:
        return gym.make(env_id, **kwargs)
    except gym.error.DependencyNotInstalled as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise EnvError(f"cannot make '{env_id}': {first_line}") from None


@dataclass
class GymMakeFactory:
    """``gymnasium.make(env_id)``, importing ``module`` first when given (picklable)."""

    env_id: str
    module: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __call__(self) -> gym.Env:
        if self.module:
            importlib.import_module(self.module)
        return _make(self.env_id, self.kwargs)


@dataclass
class AttributeFactory:
    """Calls ``module.name`` (a gym.Env subclass or a factory) with no arguments (picklable)."""

    module: str
    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __call__(self) -> gym.Env:
        return getattr(importlib.import_module(self.module), self.name)(**self.kwargs)


@dataclass
class SuiteFactory:
    """Calls a suite builder registered in ``SUITES`` (picklable when the builder is module-level)."""

    builder: SuiteBuilder
    task: str
    env_cfg: EnvConfig
    seed: int

    def __call__(self) -> gym.Env:
        return self.builder(self.task, self.env_cfg, self.seed)


@dataclass
class InstanceFactory:
    """Hands out one already-built env; it backs a single env only."""

    env: gym.Env

    def __call__(self) -> gym.Env:
        return self.env


def _import_module(spec: str, module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name and (module == error.name or module.startswith(error.name + ".")):
            suites = ", ".join(sorted(SUITES)) or "none registered"
            raise EnvError(
                f"unknown environment '{spec}': '{module}' is neither an importable module nor a known suite "
                f"(suites: {suites}); check the spelling or install/put the module on PYTHONPATH"
            ) from None
        raise EnvError(
            f"importing '{module}' for environment '{spec}' failed: {error}; install the missing package"
        ) from None


def _resolve_string(spec: str, env_cfg: EnvConfig, seed: int, kwargs: dict[str, Any]) -> Callable[[], gym.Env]:
    spec = spec.strip()
    if not spec:
        raise EnvError(f"empty environment id: set env.id to a Gymnasium id ({_EXAMPLES})")
    prefix, sep, name = spec.partition(":")
    if not sep or spec in gym.registry:
        _check_registered(spec)
        return GymMakeFactory(spec, None, dict(kwargs))
    if not prefix or not name:
        raise EnvError(f"malformed environment id '{spec}': expected `module:EnvId` or `suite:task` ({_EXAMPLES})")
    if prefix in SUITES:
        return SuiteFactory(SUITES[prefix], name, env_cfg, seed)
    module = _import_module(spec, prefix)
    try:
        gym.spec(name)
        return GymMakeFactory(name, prefix, dict(kwargs))
    except gym.error.Error:
        pass
    target = getattr(module, name, None)
    if target is not None and callable(target):
        return AttributeFactory(prefix, name, dict(kwargs))
    raise EnvError(
        f"unknown environment '{spec}': importing '{prefix}' registered no Gymnasium id '{name}' "
        f"and '{prefix}' has no env class or factory named '{name}'"
    )


def resolve(
    spec: Any,
    env_cfg: EnvConfig | None = None,
    seed: int = 0,
    make_kwargs: dict[str, Any] | None = None,
) -> Callable[[], gym.Env]:
    """Return a zero-argument factory for the env that ``spec`` names (see the module docstring).

    String specs are checked now (unknown ids raise ``EnvError`` here, not in a worker); the env
    itself is built when the factory is called. ``env_cfg`` and ``seed`` reach suite builders;
    ``make_kwargs`` (e.g. ``{"render_mode": "rgb_array"}``) reach ``gymnasium.make`` or the env class.
    """
    env_cfg = env_cfg if env_cfg is not None else EnvConfig()
    kwargs = dict(make_kwargs or {})
    if isinstance(spec, str):
        return _resolve_string(spec, env_cfg, seed, kwargs)
    if isinstance(spec, gym.Env):
        return InstanceFactory(spec)
    if callable(spec):
        return spec
    raise EnvError(
        f"cannot make an environment from a {type(spec).__name__}: pass a Gymnasium id string "
        f"({_EXAMPLES}), a gymnasium.Env instance, or a zero-argument function returning one"
    )
