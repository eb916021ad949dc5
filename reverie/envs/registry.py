"""Turn an env spec (id string, `module:EnvId`, suite id, instance, or factory) into an env factory.

Spec forms:

- ``"CartPole-v1"``: a registered Gymnasium id, made with ``gymnasium.make``;
- ``"my_package:MyEnv-v0"``: import ``my_package`` (which registers ids), then ``gymnasium.make``;
  if the id is still unknown but ``my_package.MyEnv-v0`` is an attribute that is a ``gym.Env``
  subclass or a callable, it is called with no arguments;
- ``"dmc:walker_walk"``: a suite prefix in ``SUITES`` (see ``reverie.envs.suites``); a suite whose
  task is optional is also named bare (``"crafter"``);
- a ``gymnasium.Env`` instance, or a zero-argument callable that returns one.

Factories built from strings are picklable, so parallel workers can build their own envs.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

from reverie.config import EnvConfig
from reverie.errors import EnvError

SuiteBuilder = Callable[[str, EnvConfig, int], gym.Env]


@dataclass(frozen=True)
class Suite:
    """A family of envs addressed as ``name:task`` (e.g. ``dmc:walker_walk``).

    Attributes:
        name: the id prefix.
        build: ``build(task, env_cfg, seed) -> gym.Env``; module-level, so factories pickle.
        preset: the suite preset used when the user names none (e.g. ``dmc_proprio``).
        requires: modules the suite imports; missing ones give an ``EnvError`` with ``install``.
        install: how to install what is missing (one line).
        repeats_actions: the built env applies ``env_cfg.action_repeat`` itself (e.g. to render
            only the last frame, or to max-pool Atari frames), so the adapter must not repeat again.
        check_task: raises ``EnvError`` for a task name the suite does not have (called early).
        default_task: the task of the bare name (``"crafter"``); None when a task is required.
    """

    name: str
    build: SuiteBuilder
    preset: str
    requires: tuple[str, ...] = ()
    install: str = ""
    repeats_actions: bool = False
    check_task: Callable[[str], None] | None = None
    default_task: str | None = None


SUITES: dict[str, Suite] = {}
"""Suite prefix (as in "dmc:walker_walk") -> Suite; filled by ``reverie.envs.suites``."""


def register_suite(suite: Suite) -> Suite:
    SUITES[suite.name] = suite
    return suite


def suite_of(spec: Any) -> Suite | None:
    """The suite an env id names (``"dmc:walker_walk"``, ``"crafter"``), else None."""
    if not isinstance(spec, str):
        return None
    prefix, sep, _ = spec.strip().partition(":")
    if sep:
        return SUITES.get(prefix)
    suite = SUITES.get(prefix)
    return suite if suite is not None and suite.default_task is not None else None


def default_suite_preset(spec: Any) -> str | None:
    """The suite preset an env id implies (``dmc_proprio`` for ``dmc:walker_walk``), else None."""
    suite = suite_of(spec)
    return suite.preset if suite is not None else None


def _check_requirements(suite: Suite, spec: str) -> None:
    missing = [m for m in suite.requires if importlib.util.find_spec(m) is None]
    if missing:
        names = _names(missing)
        verb = "is" if len(missing) == 1 else "are"
        raise EnvError(f"environment '{spec}' needs {names}, which {verb} not installed; {suite.install}")


def _names(items: list[str]) -> str:
    return " and ".join([", ".join(items[:-1]), items[-1]] if len(items) > 1 else items)

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
    """Builds a task of a registered ``Suite`` (picklable: the builder is module-level)."""

    suite: Suite
    task: str
    env_cfg: EnvConfig
    seed: int

    def __call__(self) -> gym.Env:
        return self.suite.build(self.task, self.env_cfg, self.seed)


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
    suite = suite_of(spec)
    if suite is not None and spec not in gym.registry:
        task = name if sep else suite.default_task
        if not task:
            raise EnvError(f"environment '{spec}' names no task; use `{suite.name}:<task>`")
        _check_requirements(suite, spec)
        if suite.check_task is not None:
            suite.check_task(task)
        return SuiteFactory(suite, task, env_cfg, seed)
    if not sep or spec in gym.registry:
        _check_registered(spec)
        return GymMakeFactory(spec, None, dict(kwargs))
    if not prefix or not name:
        raise EnvError(f"malformed environment id '{spec}': expected `module:EnvId` or `suite:task` ({_EXAMPLES})")
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
