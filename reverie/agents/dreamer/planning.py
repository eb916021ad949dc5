"""Planning with the Dreamer world model: which planner `behavior.planner.kind` builds, and the RSSM
seen as the `LatentModel` that MPPI searches (reverie/planners/mppi.py).

    step(s, a)       s' = imagine_step(s, a) (the prior, sampled latents); r̂ = reward(feat(s'))
    value(s)         the critic's mean at feat(s) with `behavior.planner.value`, else 0 (PlaNet)
    policy(s)        the actor's sample at feat(s) when there is an actor (planner.value), else none
    termination(s)   1 − ĉ(s), ĉ the continue head's mean (divided by γ when `model.contdisc`
                     folds the discount into it)

CEM (reverie/planners/cem.py) reads the world model directly and needs no adapter. For discrete
actions, `SearchPlanner` runs the tree search of reverie/planners/search.py over the same RSSM
(`RSSMSearchModel`): the prior as dynamics, the actor's log-probabilities of the A joint actions as
the search prior, the critic's mean as the value, r̂ as the reward and ĉ (γ·ĉ unless `model.contdisc`
already folds γ in) as each edge's discount.
"""

from __future__ import annotations

import torch

from reverie.errors import ConfigError
from reverie.planners import CEMPlanner, JointActions, MPPIPlanner, tree_search
from reverie.planners.joint_actions import MAX_JOINT_ACTIONS


def make_planner(cfg, act_space):
    """The planner of `behavior.planner` for this action space (CEM any, MPPI continuous only, search
    discrete only)."""
    p = cfg.behavior.planner
    if p.kind == "cem":
        return CEMPlanner(act_space, p.horizon, p.candidates, p.iterations, p.top_k)
    if p.kind == "search":
        if not act_space.discrete:
            raise ConfigError("behavior.planner.kind=search plans discrete actions; this env's actions are "
                              "continuous (Box): use behavior.planner.kind=mppi or cem")
        actions = JointActions(act_space.sizes)
        if actions.count > MAX_JOINT_ACTIONS:
            raise ConfigError(f"behavior.planner.kind=search would search {actions.count} joint actions, more "
                              f"than {MAX_JOINT_ACTIONS}: use behavior.planner.kind=cem")
        return SearchPlanner(actions, p.tree, p.simulations)
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


class RSSMSearchModel:
    """The Dreamer world model, actor and critic as a tree search's `SearchModel` (see the module
    docstring); latents are RSSM states {"deter": (M, D), "stoch": (M, S, K)}."""

    def __init__(self, wm, ac, actions: JointActions):
        self.wm, self.ac, self.actions = wm, ac, actions
        self.discount_scale = 1.0 if wm.cfg.model.contdisc else wm.discount

    def predict(self, latent):
        feat = self.wm.features(latent)
        policy = self.ac.actor(feat)
        log_probs = [part.probs.float().clamp(min=1e-12).log() for part in policy.parts]  # [(M, size_d)]
        return self.actions.joint_log_probs(log_probs), self.ac.critic(feat).mean().float()

    def step(self, latent, action):
        nxt = self.wm.rssm.imagine_step(latent, self.actions.to_vector(action))
        feat = self.wm.features(nxt)
        reward = self.wm.reward(feat).mean().float()
        discount = self.wm.cont(feat).mean().float() * self.discount_scale
        return nxt, reward, discount


class SearchPlanner:
    """Acting by tree search over the RSSM (`behavior.planner.kind=search`): `plan` gives one-hot
    actions (N, Σ sizes) for N RSSM states."""

    def __init__(self, actions: JointActions, tree: str, simulations: int):
        self.actions, self.tree, self.simulations = actions, tree, simulations

    def plan(self, wm, ac, state, explore: bool) -> torch.Tensor:
        model = RSSMSearchModel(wm, ac, self.actions)
        root = {"deter": state["deter"], "stoch": state["stoch"]}
        return self.actions.to_vector(tree_search(self.tree, model, root, self.simulations, explore).action)
