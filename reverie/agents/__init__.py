"""Agent families behind one contract (`contract.Agent`), registered by name.

    dreamer   DreamerV3 (current and 2023), DreamerV2, Dreamer v1, PlaNet (reverie/agents/dreamer/)
    tdmpc2    TD-MPC2: an implicit latent model planned with MPPI (reverie/agents/tdmpc2/)
    muzero    MuZero / EfficientZero: a learnt model searched by a batched tree search (reverie/agents/muzero/)

`make_agent` builds the family the config's `agent.family` names. A new family registers itself
with `@register("name")` in its package and is listed in `FAMILY_MODULES`, so that naming it in a
config imports it.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

import torch

from reverie.agents.contract import MODES, WRITE_BACK_PREFIX, Agent, ReplayField, State
from reverie.errors import ConfigError

__all__ = ["Agent", "MODES", "ReplayField", "State", "WRITE_BACK_PREFIX", "FAMILY_MODULES", "make_agent", "register", "families"]

# name → the module that registers it (imported on first use: a family's dependencies load only
# when a config asks for it)
FAMILY_MODULES = {"dreamer": "reverie.agents.dreamer", "tdmpc2": "reverie.agents.tdmpc2",
                  "muzero": "reverie.agents.muzero"}
_REGISTRY: dict[str, Callable[..., Agent]] = {}


def register(name: str) -> Callable[[type], type]:
    """Class decorator: make `cls(obs_space, act_space, cfg, device)` the family `name`."""
    def decorate(cls: type) -> type:
        _REGISTRY[name] = cls
        return cls
    return decorate


def families() -> list[str]:
    return sorted(FAMILY_MODULES)


def make_agent(obs_space: dict, act_space: Any, cfg: Any, device: str | torch.device = "cpu") -> Agent:
    """The agent of the family `cfg.agent.family` for these spaces, on `device`."""
    name = cfg.agent.family
    if name not in FAMILY_MODULES:
        raise ConfigError(f"unknown agent.family '{name}'; choose from {', '.join(families())}")
    importlib.import_module(FAMILY_MODULES[name])
    return _REGISTRY[name](obs_space, act_space, cfg, device)
