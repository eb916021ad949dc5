"""The MuZero agent (Schrittwieser et al. 2020) with EfficientZero's consistency loss (Ye et al.
2021): it acts by a batched tree search (reverie/planners/: MuZero's pUCT or Gumbel MuZero) over
its learnt model, stores the search's policy in replay, and trains on windows of K + n + 1 steps:

    s⁰ = h(o_t),  s^{k+1}, r̂^{k+1} = g(s^k, a_{t+k}),  p^k, v̂^k = f(s^k),   k = 0 … K
    L = Σ_k w_k [ c_p·CE(π_{t+k}, p^k) + c_v·CE₂(z_{t+k}, v̂^k) + c_r·CE₂(u_{t+k}, r̂^k)·[k ≥ 1]
                  + c_c·(−cos(P(Q(s^k)), sg(Q(h(o_{t+k})))))·[k ≥ 1] ]

with w_0 = 1, w_k = 1/K (the paper's scaling of the unrolled steps), CE₂ the two-hot cross-entropy
in symlog space, the gradient into each dynamics step scaled by ½, targets z, u and masks from
`targets.unroll_targets` (n-step returns bootstrapped with the target network's value), and Q, P
EfficientZero's projector and predictor. One Adam optimiser with decoupled weight decay and a
global-norm clip; the target network is a hard copy every `target_update` updates. With
`reanalyse` > 0 the first fraction of each batch gets fresh policy targets from a search with the
current network (MuZero Reanalyse). With `value_prefix` the reward head reads an LSTM over the
unrolled latents and is trained on Σ_{i ≤ k} u_{t+i} (restarting every `prefix_horizon` steps), as
EfficientZero's value prefix. A non-finite loss or gradient skips the update without a host
sync (`train/nonfinite`).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from reverie import distributed
from reverie.agents import ReplayField, register
from reverie.agents.muzero.networks import MuZeroNetwork, Projection, consistency_loss
from reverie.agents.muzero.targets import unroll_targets, value_prefix_targets
from reverie.config import Config
from reverie.errors import ConfigError
from reverie.nn.optim import Adam
from reverie.planners import SearchResult, tree_search
from reverie.planners.joint_actions import MAX_JOINT_ACTIONS, JointActions

POLICY_KEY = "search_policy"


class NetworkSearchModel:
    """A `MuZeroNetwork` as the tree search's `SearchModel`, with a fixed discount. Latents are
    {"s": (M, L)}; with the value prefix also the LSTM carry "h", "c" (M, lstm_dim), the predicted
    prefix (M,) and the depth (M,): an edge's reward is the child's prefix minus the parent's, and
    the carry and prefix restart at every multiple of `prefix_horizon` (EfficientZero's search)."""

    def __init__(self, net: MuZeroNetwork, discount: float, prefix_horizon: int = 5):
        self.net, self.discount, self.horizon = net, discount, prefix_horizon

    def root(self, s: torch.Tensor):
        if self.net.prefix_cell is None:
            return {"s": s}
        carry = s.new_zeros(s.shape[0], self.net.prefix_cell.hidden_size)
        return {"s": s, "h": carry, "c": carry.clone(), "prefix": s.new_zeros(s.shape[0]),
                "depth": s.new_zeros(s.shape[0])}

    def predict(self, latent):
        logits, value_logits = self.net.predict(latent["s"])
        return logits, self.net.twohot(value_logits).mean()

    def step(self, latent, action):
        carry = (latent["h"], latent["c"]) if "h" in latent else None
        nxt, reward_logits, carry = self.net.dynamics(latent["s"], action, carry)
        predicted = self.net.twohot(reward_logits).mean()
        discount = torch.full_like(predicted, self.discount)
        if carry is None:
            return {"s": nxt}, predicted, discount
        depth = latent["depth"] + 1
        keep = (torch.remainder(depth, self.horizon) != 0).to(nxt.dtype)  # (M,) 0 where the prefix restarts
        child = {"s": nxt, "h": carry[0] * keep[:, None], "c": carry[1] * keep[:, None],
                 "prefix": predicted * keep, "depth": depth}
        return child, predicted - latent["prefix"], discount


def scale_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    """x forward, scale · grad backward (MuZero's `scale_gradient`)."""
    return x * scale + x.detach() * (1 - scale)


@register("muzero")
class MuZeroAgent(nn.Module):
    eval_mode = "eval"
    context_length = 0

    def __init__(self, obs_space: dict, act_space, cfg: Config, device: str | torch.device = "cpu"):
        super().__init__()
        c = cfg.muzero
        if not act_space.discrete:
            raise ConfigError("agent.family muzero needs a discrete action space (Discrete or MultiDiscrete); this "
                              "env's actions are continuous (Box): use --preset tdmpc2 or a Dreamer preset")
        self.actions = JointActions(act_space.sizes)
        if self.actions.count > MAX_JOINT_ACTIONS:
            raise ConfigError(f"agent.family muzero searches the {self.actions.count} joint actions of "
                              f"MultiDiscrete{list(act_space.sizes)}, more than {MAX_JOINT_ACTIONS}: use a Dreamer preset")
        window = c.unroll + c.td_steps + 1
        if cfg.batch_length != window:
            raise ConfigError(f"agent.family muzero trains on muzero.unroll + muzero.td_steps + 1 = {window} steps: "
                              f"set batch_length={window} (it is {cfg.batch_length})")
        self.cfg, self.c = cfg, c
        self.obs_space, self.act_space = dict(obs_space), act_space
        self.obs_keys = sorted(obs_space)
        self.batch_size, self.sequence_length = cfg.batch_size, window
        self.replay_fields = {POLICY_KEY: ReplayField((self.actions.count,), np.dtype(np.float32))}
        self.device = torch.device(device)
        self.net = MuZeroNetwork(obs_space, self.actions.count, c)
        self.projection = Projection(c.latent_dim, c.projection_dim) if c.consistency_coef > 0 else None
        self.target_net = copy.deepcopy(self.net).requires_grad_(False)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        self.to(self.device)
        self.params = [p for p in self.parameters() if p.requires_grad]
        self.optimizer = Adam(self.params, lr=c.lr, wd=c.wd)
        self.eval()

    # ------------------------------------------------------------------------------------------
    def observation(self, obs: dict) -> dict[str, torch.Tensor]:
        """The observation keys as tensors on the device (numpy arrays or tensors in)."""
        return {k: torch.as_tensor(obs[k]).to(self.device) for k in self.obs_keys}

    def search(self, net: MuZeroNetwork, obs: dict[str, torch.Tensor], explore: bool) -> SearchResult:
        """The configured search from h(obs) for every row (`planners.tree_search`)."""
        c = self.c
        model = NetworkSearchModel(net, c.discount, c.prefix_horizon)
        return tree_search(c.search, model, model.root(net.represent(obs)), c.simulations, explore, max_considered=c.max_considered, c1=c.c1, c2=c.c2,
                           dirichlet_alpha=c.dirichlet_alpha, dirichlet_fraction=c.dirichlet_fraction,
                           temperature=c.temperature)

    def init_state(self, batch_size: int) -> dict[str, torch.Tensor]:
        """MuZero carries nothing between steps: the search starts from h(o_t)."""
        return {}

    @torch.no_grad()
    def act(self, state, obs, mode: str = "train"):
        if mode not in ("train", "eval", "random"):
            raise ValueError(f"unknown act mode '{mode}'; use train, eval or random")
        if mode == "random":
            n = len(np.asarray(obs["is_first"]))
            return state, self.act_space.sample_random(np.random.default_rng(), n).astype(np.float32), {}
        self.eval()
        result = self.search(self.net, self.observation(obs), explore=mode == "train")
        action = self.actions.to_vector(result.action).cpu().numpy()
        return state, action, {POLICY_KEY: result.policy.float().cpu().numpy()}

    # ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def reanalysed_policy(self, obs: dict[str, torch.Tensor], policy: torch.Tensor) -> torch.Tensor:
        """policy (B, T, A) with rows 0 … R−1, steps 0 … K replaced by a search with the current network."""
        R, K = round(self.c.reanalyse * policy.shape[0]), self.c.unroll
        if R == 0:
            return policy
        was_training = self.training
        self.eval()
        fresh = self.search(self.net, {k: v[:R, :K + 1].flatten(0, 1) for k, v in obs.items()}, explore=True)
        self.train(was_training)
        policy = policy.clone()
        policy[:R, :K + 1] = fresh.policy.reshape(R, K + 1, -1).to(policy.dtype)
        return policy

    def losses(self, data: dict[str, torch.Tensor], obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The per-term losses of the module docstring, each a 0-d tensor already weighted by w_k and
        averaged over the batch. obs {key: (B, T, ...)}, data reward/is_first/is_terminal (B, T),
        action (B, T, Σ sizes), search_policy (B, T, A)."""
        c, net = self.c, self.net
        B, T = data["reward"].shape
        K = c.unroll
        with torch.no_grad():
            flat = {k: v.flatten(0, 1) for k, v in obs.items()}
            _, value_logits = self.target_net.predict(self.target_net.represent(flat))
            bootstrap = self.target_net.twohot(value_logits).mean().reshape(B, T)
            policy = self.reanalysed_policy(obs, data[POLICY_KEY].float())
            targets = unroll_targets(data["reward"].float(), data["is_first"], data["is_terminal"], bootstrap,
                                     policy, K, c.td_steps, c.discount)
            policy = policy / policy.sum(-1, keepdim=True).clamp(min=1e-12)
            consistency_target = None
            if self.projection is not None:
                future = {k: v[:, 1:K + 1].flatten(0, 1) for k, v in obs.items()}
                consistency_target = self.projection.target(net.represent(future)).reshape(B, K, -1)
        actions = self.actions.from_vector(data["action"])  # (B, T)
        weight = torch.tensor([1.0] + [1.0 / K] * K, device=self.device)  # (K + 1,) w_k
        s = net.represent({k: v[:, 0] for k, v in obs.items()})  # (B, L)
        carry = None  # the value prefix's LSTM carry
        reward_targets = value_prefix_targets(targets.reward, c.prefix_horizon) if c.value_prefix else targets.reward
        terms: dict[str, list[torch.Tensor]] = {"policy": [], "value": [], "reward": [], "consistency": []}
        for k in range(K + 1):
            logits, value_logits = net.predict(s)
            terms["value"].append(net.twohot(value_logits).loss(targets.value[:, k]) * targets.value_mask[:, k])
            cross_entropy = -(policy[:, k] * torch.log_softmax(logits.float(), -1)).sum(-1)
            terms["policy"].append(cross_entropy * targets.policy_mask[:, k])
            if k == K:
                break
            s, reward_logits, carry = net.dynamics(scale_gradient(s, c.dynamics_grad_scale), actions[:, k], carry)
            if carry is not None and (k + 1) % c.prefix_horizon == 0:  # the prefix restarts after this step
                carry = (carry[0] * 0, carry[1] * 0)
            terms["reward"].append(net.twohot(reward_logits).loss(reward_targets[:, k + 1])
                                   * targets.reward_mask[:, k + 1])
            if self.projection is not None:
                loss = consistency_loss(self.projection.online(s), consistency_target[:, k])
                terms["consistency"].append(loss * targets.observed[:, k + 1])
        losses = {}
        for name, values in terms.items():
            if values:
                per_step = torch.stack(values, 1)  # (B, K + 1) or (B, K)
                w = weight if per_step.shape[1] == K + 1 else weight[1:]
                losses[name] = (per_step * w).sum(1).mean()
        return losses

    def train_step(self, batch: dict) -> dict[str, torch.Tensor]:
        self.train()
        c = self.c
        data = {k: torch.as_tensor(v).to(self.device) for k, v in batch.items()}
        obs = {k: data[k] for k in self.obs_keys}
        losses = self.losses(data, obs)
        coef = {"policy": c.policy_coef, "value": c.value_coef, "reward": c.reward_coef,
                "consistency": c.consistency_coef}
        total = sum(coef[k] * v for k, v in losses.items())
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        distributed.average_gradients(self.params)  # data-parallel: the mean over the ranks
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, c.grad_clip, foreach=True)
        data_finite = torch.stack([torch.isfinite(v).all() for v in data.values() if v.is_floating_point()]).all()
        # () bool, no host sync; false on every rank when it is false on one
        finite = distributed.all_true(torch.isfinite(total) & torch.isfinite(grad_norm) & data_finite)
        self.optimizer.step(apply=finite)
        self.update_target(finite)
        self.eval()
        metrics = {f"loss/{k}": v.detach() for k, v in losses.items()}
        metrics.update({"loss/total": total.detach(), "train/grad_norm": grad_norm,
                        "train/nonfinite": (~finite).float()})
        return metrics

    @torch.no_grad()
    def update_target(self, finite: torch.Tensor) -> None:
        """Count a finite update; every `target_update`-th copies the network into the target."""
        self.updates += finite.long()
        due = (finite & (self.updates % self.c.target_update == 0)).float()
        targets = list(self.target_net.parameters())
        torch._foreach_lerp_(targets, [p.detach() for p in self.net.parameters()], [due] * len(targets))

    def report(self, batch: dict, context: int = 5) -> dict[str, Any]:
        """No decoder, so no open-loop video: nothing to report."""
        return {}

    # ------------------------------------------------------------------------------------------
    def state_dict(self, *args, **kwargs):
        return {"modules": super().state_dict(*args, **kwargs), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state["modules"], strict=strict, assign=assign)
        self.optimizer.load_state_dict(state["optimizer"])
        return result
