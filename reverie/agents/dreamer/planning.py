"""Planning with the Dreamer world model: which planner `behavior.planner.kind` builds, and the RSSM
seen as the `LatentModel` that MPPI searches (reverie/planners/mppi.py).

    step(s, a)       s' = imagine_step(s, a) (the prior, sampled latents); r̂ = reward(feat(s'))
    value(s)         the critic's mean at feat(s) with `behavior.planner.value`, else 0 (PlaNet)
    policy(s)        the actor's sample at feat(s) when there is an actor (planner.value), else none
    termination(s)   1 − ĉ(s), ĉ the continue head's mean (divided by γ when `model.contdisc`
                     folds the discount into it)

CEM (reverie/planners/cem.py) reads the world model directly and needs no adapter.
"""

from __future__ import annotations

import torch

from reverie.errors import ConfigError
from reverie.planners import CEMPlanner, MPPIPlanner


def make_planner(cfg, act_space):
    """The planner of `behavior.planner` for this action space (CEM any, MPPI continuous only)."""
    p = cfg.behavior.planner
    if p.kind == "cem":
        return CEMPlanner(act_space, p.horizon, p.candidates, p.iterations, p.top_k)
    if act_space.discrete:
        raise ConfigError("behavior.planner.kind=mppi plans continuous (Box) actions; this env's actions are "
                          "discrete: use behavior.planner.kind=cem")
    return MPPIPlanner(act_space.dim, p.horizon, p.iterations, p.candidates, p.top_k, p.policy_samples,
                       min_std=p.min_std, max_std=p.max_std, temperature=p.temperature,
                       discount=1.0 - 1.0 / cfg.behavior.horizon)


class RSSMLatentModel:
    """The Dreamer world model (and its actor and critic, when trained) as an MPPI `LatentModel`;
    states are RSSM states {"deter": (M, D), "stoch": (M, S, K)}."""

    def __init__(self, wm, ac=None, use_value: bool = False, discount: float = 1.0):
        self.wm, self.ac, self.use_value = wm, ac, use_value
        self.cont_scale = 1.0 / discount if wm.cfg.model.contdisc else 1.0  # ĉ = γ(1 − term) when folded

    def step(self, state, action):
        state = self.wm.rssm.imagine_step(state, action)
        return state, self.wm.reward(self.wm.features(state)).mean()

    def value(self, state):
        if not self.use_value:
            return torch.zeros(state["deter"].shape[0], device=state["deter"].device)
        return self.ac.critic(self.wm.features(state)).mean()

    def policy(self, state):
        if self.ac is None:
            return None
        return self.ac.actor(self.wm.features(state)).sample().float().clamp(-1.0, 1.0)

    def termination(self, state):
        cont = self.wm.cont(self.wm.features(state)).mean().float() * self.cont_scale
        return 1.0 - cont.clamp(0.0, 1.0)
