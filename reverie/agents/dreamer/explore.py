"""Plan2Explore (Sekar et al. 2020) as DreamerV3 2023 trains it (`behavior.explore`, `--preset plan2explore`).

An ensemble of K MLPs f_1 … f_K, each predicting the next step's stochastic latent from the current
step's model state and action, is trained on the replayed posterior sequence (inputs and targets
stop-gradient, so its loss trains the ensemble alone):

    L_ens = Σ_k ‖f_k(sg[h_t, z_t, a_t]) − sg(z_{t+1})‖²       summed over the S·K latent dims, per (b, t < T−1)

Its disagreement is the intrinsic reward at every imagined state,

    r^disag_t = mean_d std_k f_k([h_t, z_t, a_t])_d            (population std over the K members)

aligned like the reward head's r(s_t): the λ-return of step t reads r_{t+1}. Two actors learn in
imagination from the same posterior starts:

- the exploration actor, a second `ActorCritic` whose rewards are the extrinsic one (the world
  model's reward head, weight `extr`) and the disagreement (weight `disag`), each with its own
  critic, slow critic and return normaliser; it follows the weighted mean of the normalised
  advantages, adv = Σ_k w_k·(R^λ_k − v_k)/max(1, S_k) / Σ_k w_k (DreamerV3 2023 `ImagActorCritic`);
- the task actor, trained zero-shot on the extrinsic reward alone: `Plan2Explore` *is* that
  actor-critic (its `actor`, `critic`, `slow_critic`, `retnorm` are the agent's usual ones), so the
  agent evaluates, plans and checkpoints it exactly as without exploration.

In training `act` takes the exploration actor for the first `until` train-mode policy steps (0:
the whole run), then the task actor (`actor_for`); the agent counts those steps itself (the loop
tells an agent nothing else), and the count is checkpointed as this module's extra state.

The losses join the agent's update under their own names (LOSS_GROUPS): `expl_policy`, `expl_value`,
`expl_value_disag` and `ensemble`; their parameters form the groups `expl_actor`, `expl_critic` and
`ensemble`, which with `optim.kind=adam` take the `optim.actor`, `optim.critic` and `optim.ensemble`
settings (OPTIM; 2023: actor_opt, critic_opt, expl_opt). The explorer has no replay value loss (its
disagreement critic has no replayed reward).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from reverie.agents.dreamer.actor_critic import Actor, ActorCritic
from reverie.agents.dreamer.world_model import WorldModel
from reverie.config import BehaviorConfig, LossScales
from reverie.kernels.compile import compiled
from reverie.nn.layers import MLP, Linear

# which losses train which of the parameter groups `Plan2Explore.param_groups` returns
LOSS_GROUPS = {"expl_actor": ("expl_policy",), "expl_critic": ("expl_value", "expl_value_disag"),
               "ensemble": ("ensemble",)}
OPTIM = {"expl_actor": "actor", "expl_critic": "critic", "ensemble": "ensemble"}  # group → its optim.<name> (Adam)


class Ensemble(nn.Module):
    """K MLPs (`layers` × `units`, the model's norm and activation, a linear output scaled by
    `outscale`) from [deter, stoch, action] (…, F + A) to the next stoch (…, S·K)."""

    def __init__(self, in_features: int, out_features: int, members: int, units: int, layers: int,
                 outscale: float = 1.0, norm="rms", act="silu"):
        super().__init__()
        self.members = nn.ModuleList()
        for _ in range(members):
            mlp = MLP(in_features, units, layers, norm, act)
            self.members.append(nn.Sequential(mlp, Linear(mlp.out_features, out_features, outscale=outscale)))

    @staticmethod
    def inputs(feat: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """[h, z] features (…, F) and actions (…, A) → the members' input (…, F + A)."""
        return torch.cat([feat, action.to(feat.dtype)], -1)

    @compiled
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's prediction: (…, F + A) → (K, …, S·K), in float32."""
        return torch.stack([member(x).float() for member in self.members], 0)

    def disagreement(self, x: torch.Tensor) -> torch.Tensor:
        """mean_d std_k f_k(x)_d, the population std (as jnp.std): (…, F + A) → (…)."""
        return self.predict(x).std(0, correction=0).mean(-1)

    def reward(self, wm: WorldModel, feat: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The intrinsic reward, an `actor_critic.RewardFn`: features (N, H+1, F), actions (N, H+1, A)
        of an imagined trajectory → (N, H+1)."""
        return self.disagreement(self.inputs(feat, action))

    def loss(self, feat: torch.Tensor, action: torch.Tensor, stoch: torch.Tensor) -> torch.Tensor:
        """Σ_k squared error towards the next step's stoch: replayed features (B, T, F), actions taken
        in them (B, T, A) and flat stochs (B, T, S·K) → (B, T − 1). Stop-gradient on all inputs."""
        x = self.inputs(feat, action)[:, :-1].detach()  # step t: (B, T−1, F + A)
        target = stoch[:, 1:].detach().float()  # z_{t+1}: (B, T−1, S·K)
        return (self.predict(x) - target).square().sum(-1).sum(0)  # (K, B, T−1, S·K) → (B, T−1)


class Plan2Explore(ActorCritic):
    """The task actor-critic (this module's own actor, critic, slow critic and return normaliser,
    extrinsic reward only) plus the exploration actor-critic `explorer` and the `ensemble` behind its
    intrinsic reward (module docstring). `stoch_dim`: the flat stochastic latent's size S·K."""

    def __init__(self, feat_dim: int, stoch_dim: int, act_space, cfg: BehaviorConfig, norm="rms", act="silu"):
        super().__init__(feat_dim, act_space, cfg, norm, act)  # the task behaviour, built as without exploration
        e = cfg.explore
        self.ensemble = Ensemble(feat_dim + act_space.dim, stoch_dim, e.models, e.units, e.layers, e.outscale,
                                 norm, act)
        self.explorer = ActorCritic(feat_dim, act_space, dataclasses.replace(cfg, repval=False), norm, act,
                                    extr=e.extr, intrinsic={"disag": (e.disag, self.ensemble.reward)})
        self.until = e.until
        self.steps = 0  # train-mode policy steps acted so far (`actor_for`); checkpointed

    def loss(self, wm: WorldModel, post: dict[str, torch.Tensor], data: dict[str, torch.Tensor], contdisc: bool):
        """The task's losses (policy, value, repval), the explorer's under `expl_` and the ensemble's
        (B, T − 1); the explorer's metrics under `expl/`. post: {deter (B, T, D), stoch (B, T, S, K)}."""
        losses, metrics = super().loss(wm, post, data, contdisc)
        expl_losses, expl_metrics = self.explorer.loss(wm, post, data, contdisc)
        losses.update({f"expl_{k}": v for k, v in expl_losses.items()})
        metrics.update({f"expl/{k}": v for k, v in expl_metrics.items()})
        feat = wm.features({k: v.detach() for k, v in post.items()})  # (B, T, F)
        losses["ensemble"] = self.ensemble.loss(feat, data["action"], post["stoch"].flatten(-2))
        return losses, metrics

    @torch.no_grad()
    def update_slow_critic(self, apply: torch.Tensor | None = None) -> None:
        """Every slow critic, the task's and the explorer's, one step towards its critic."""
        super().update_slow_critic(apply)
        self.explorer.update_slow_critic(apply)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """The explorer's and the ensemble's parameters by group (LOSS_GROUPS); the task's actor and
        critic are the agent's `actor` and `critic` groups."""
        critics = [p for _, critic, _, _ in self.explorer.value_models() for p in critic.parameters()]
        return {"expl_actor": list(self.explorer.actor.parameters()), "expl_critic": critics,
                "ensemble": list(self.ensemble.parameters())}

    @staticmethod
    def loss_scales(scales: LossScales) -> dict[str, float]:
        """The scales of the added losses: the explorer's as the task's; the ensemble's 1 (2023: its own optimiser)."""
        return {"expl_policy": scales.policy, "expl_value": scales.value, "expl_value_disag": scales.value,
                "ensemble": 1.0}

    def actor_for(self, mode: str, envs: int = 0) -> Actor:
        """The actor of one `act` call for `envs` envs: in "train" mode the exploration actor while
        fewer than `until` train-mode policy steps have been acted (always when `until` is 0), then
        the task actor; the task actor in every other mode. Counts the call's `envs` train steps
        (host-side: no device sync)."""
        if mode != "train":
            return self.actor
        exploring = not self.until or self.steps < self.until
        self.steps += envs
        return self.explorer.actor if exploring else self.actor

    def get_extra_state(self) -> dict:
        return {"steps": self.steps}

    def set_extra_state(self, state: dict) -> None:
        self.steps = int(state["steps"])
