"""The TD-MPC2 agent (Hansen et al. 2024; nicklashansen/tdmpc2 `tdmpc2.py`): the implicit world
model of `model.py` trained on (B, H + 1) windows, acting by MPPI (reverie/planners/mppi.py).

One update on observations s_{0:H}, actions a_{0:H−1}, rewards r_{1:H} and terminals d_{1:H}
(replay step t stores s_t, the action taken there, and the reward and flags of arriving at s_t):

    z_0 = h(s_0),  z_{t+1} = d(z_t, a_t);   targets ẑ_{t+1} = h(s_{t+1}) without gradients
    y_t = r_{t+1} + γ(1 − d_{t+1}) min(Q̄_i, Q̄_j)(ẑ_{t+1}, π(ẑ_{t+1}))    two target members at random
    L_model = 20·Σ_t ρ^t ‖z_{t+1} − ẑ_{t+1}‖²/H + 0.1·Σ_t ρ^t CE(R(z_t, a_t), r_{t+1})/H
              + 0.1·Σ_t ρ^t Σ_k CE(Q_k(z_t, a_t), y_t)/(H·K) + 1.0·BCE(T(z_{t+1}), d_{t+1})
    L_π = −Σ_t ρ^t mean[α·H_scaled(π(·|z_t)) + Q(z_t, π(z_t))/S] / (H + 1),  z_t detached, Q the mean
          of two members with detached weights, S the running Q scale (`RunningScale`, from t = 0)

(‖·‖² is the mean squared error over latent dims, CE the two-hot cross-entropy.) Windows may cross
an episode boundary in our replay; every term from the first `is_first` after s_0 on is masked out.
Model and policy take separate Adam optimisers (encoder lr × 0.3; policy eps 1e-5), each clipped to
a global norm of 20; the target Q-functions follow by Polyak averaging. A non-finite loss or
gradient skips the whole update without a host sync (`train/nonfinite`).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reverie import distributed
from reverie.agents import register
from reverie.agents.tdmpc2.model import RunningScale, TDMPC2Model
from reverie.config import Config
from reverie.errors import ConfigError
from reverie.nn.distributions import TwoHot
from reverie.nn.optim import Adam
from reverie.planners import MPPIPlanner


class TDMPC2LatentModel:
    """The TD-MPC2 model as MPPI's `LatentModel`: states {"z": (M, latent)}."""

    def __init__(self, model: TDMPC2Model, discount: float):
        self.model, self.discount = model, discount

    def step(self, state, action):
        z = state["z"]
        return {"z": self.model.next(z, action)}, self.model.reward(z, action).mean()

    def value(self, state):
        z = state["z"]
        return self.model.q(z, self.model.pi(z)["action"], "online", reduce="mean")

    def policy(self, state):
        return self.model.pi(state["z"])["action"]

    def termination(self, state):
        if self.model.termination_net is None:
            return None
        return torch.sigmoid(self.model.termination_logit(state["z"]))


@register("tdmpc2")
class TDMPC2Agent(nn.Module):
    eval_mode = "eval"
    context_length = 0
    replay_fields: ClassVar[dict] = {}  # no per-step extras in replay

    def __init__(self, obs_space: dict, act_space, cfg: Config, device: str | torch.device = "cpu"):
        super().__init__()
        if act_space.discrete:
            raise ConfigError("agent.family tdmpc2 needs a continuous (Box) action space; this env's actions are "
                              "discrete: use a Dreamer preset (e.g. --preset dreamerv3)")
        images = [k for k, spec in obs_space.items() if len(spec.shape) == 3]
        if images:
            raise ConfigError(f"agent.family tdmpc2 reads vector observations only for now; this env has image keys "
                              f"{images}: use env.image=false where the suite offers state observations")
        if cfg.batch_length < 2:
            raise ConfigError("agent.family tdmpc2 trains on batch_length = horizon + 1 steps: batch_length must be ≥ 2")
        self.cfg, self.c = cfg, cfg.tdmpc2
        self.obs_space, self.act_space = dict(obs_space), act_space
        self.obs_keys = sorted(obs_space)
        self.batch_size, self.sequence_length = cfg.batch_size, cfg.batch_length
        self.device = torch.device(device)
        obs_dim = sum(int(np.prod(spec.shape)) for spec in obs_space.values())
        self.model = TDMPC2Model(obs_dim, act_space.dim, self.c)
        self.scale = RunningScale(self.c.tau)
        p = cfg.behavior.planner
        self.planner = MPPIPlanner(act_space.dim, p.horizon, p.iterations, p.candidates, p.top_k, p.policy_samples,
                                   min_std=p.min_std, max_std=p.max_std, temperature=p.temperature,
                                   discount=self.c.discount)
        self.to(self.device)
        m = self.model
        rest = [q for name, module in m.named_children() if name not in ("encoder", "pi") for q in module.parameters()]
        self.model_params = [*m.encoder.parameters(), *rest]
        self.optimizers = {
            "model": Adam([{"params": list(m.encoder.parameters()), "lr": self.c.lr * self.c.enc_lr_scale},
                           {"params": rest}], lr=self.c.lr),
            "pi": Adam(m.pi.parameters(), lr=self.c.lr, eps=1e-5),
        }
        self.model.eval()

    # ------------------------------------------------------------------------------------------
    def observation(self, obs: dict) -> torch.Tensor:
        """The observation keys flattened and concatenated in key order: (…, obs_dim) float32."""
        parts = [torch.as_tensor(obs[k]) for k in self.obs_keys]  # numpy arrays or tensors
        lead = parts[0].shape[:parts[0].ndim - len(self.obs_space[self.obs_keys[0]].shape)]
        return torch.cat([x.reshape(*lead, -1).float() for x in parts], -1).to(self.device)

    def init_state(self, batch_size: int) -> dict[str, torch.Tensor]:
        """The carry: the previous plan's mean per env, zeros for a fresh episode: (N, H, A)."""
        return {"plan": self.planner.initial_mean(batch_size, self.device)}

    @torch.no_grad()
    def act(self, state, obs, mode: str = "train"):
        if mode not in ("train", "eval", "random"):
            raise ValueError(f"unknown act mode '{mode}'; use train, eval or random")
        is_first = torch.as_tensor(np.asarray(obs["is_first"]), device=self.device).bool()
        n = len(is_first)
        if mode == "random":
            action = torch.as_tensor(self.act_space.sample_random(np.random.default_rng(), n), dtype=torch.float32)
            return state, action.numpy(), {}
        self.model.eval()
        z = self.model.encode(self.observation({k: obs[k] for k in self.obs_keys}))
        previous = torch.where(is_first[:, None, None], torch.zeros_like(state["plan"]), state["plan"])
        if self.c.mpc:
            model = TDMPC2LatentModel(self.model, self.c.discount)
            action, plan = self.planner.plan(model, {"z": z}, previous, eval_mode=mode == "eval")
        else:
            out = self.model.pi(z)
            action, plan = (out["mean"] if mode == "eval" else out["action"]), previous
        return {"plan": plan}, action.float().clamp(-1, 1).cpu().numpy(), {}

    # ------------------------------------------------------------------------------------------
    def losses(self, data: dict[str, torch.Tensor]):
        """The model losses and the detached latents for the policy: see the module docstring.
        data: obs (B, H+1, D), action (B, H+1, A), reward/is_first/is_terminal (B, H+1)."""
        c, m = self.c, self.model
        obs, action = data["obs"].transpose(0, 1), data["action"].transpose(0, 1)[:-1]  # (H+1, B, D), (H, B, A)
        reward = data["reward"].transpose(0, 1)[1:].float()  # (H, B): r_{t+1}
        terminal = data["is_terminal"].transpose(0, 1)[1:].float()  # (H, B)
        # live_t: no episode started in s_1..s_t — (H+1, B) with live_0 = 1
        starts = data["is_first"].transpose(0, 1)[1:].float()
        live = torch.cat([torch.ones_like(starts[:1]), (torch.cumsum(starts, 0) == 0).float()], 0)
        H = action.shape[0]
        rho = c.rho ** torch.arange(H, device=obs.device, dtype=torch.float32)  # (H,)
        with torch.no_grad():
            next_z = m.encode(obs[1:])  # (H, B, L)
            target = reward + c.discount * (1 - terminal) * m.q(next_z, m.pi(next_z)["action"], "target", "min")
        z = m.encode(obs[0])
        zs = [z]
        for t in range(H):
            z = m.next(z, action[t])
            zs.append(z)
        zs = torch.stack(zs)  # (H+1, B, L)
        w = live[1:] * rho[:, None]  # (H, B): transition t counts while s_{t+1} is in s_0's episode
        consistency = (F.mse_loss(zs[1:], next_z, reduction="none").mean(-1) * w).sum(0).mean() / H
        reward_loss = (m.reward(zs[:-1], action).loss(reward) * w).sum(0).mean() / H
        q_logits = m.q_logits(zs[:-1], action)  # (K, H, B, bins)
        value_ce = TwoHot(q_logits, m.bins, symlog=True).loss(target.expand(q_logits.shape[0], -1, -1))  # (K, H, B)
        value_loss = (value_ce * w).sum((0, 1)).mean() / (H * q_logits.shape[0])
        losses = {"consistency": consistency, "reward": reward_loss, "value": value_loss}
        if m.termination_net is not None:
            logits = m.termination_logit(zs[1:])  # (H, B)
            losses["termination"] = (F.binary_cross_entropy_with_logits(logits, terminal, reduction="none")
                                     * live[1:]).sum() / live[1:].sum().clamp(min=1)
        return losses, zs.detach(), live

    def policy_loss(self, zs: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
        """L_π on detached latents zs (H+1, B, L) with the live mask (H+1, B)."""
        out = self.model.pi(zs)
        q = self.model.q(zs, out["action"], "detached", "mean")  # (H+1, B)
        if self.training:
            self.scale.update(q[0])
        q = q / self.scale.value
        rho = self.c.rho ** torch.arange(zs.shape[0], device=zs.device, dtype=torch.float32)
        per_step = -(self.c.entropy_coef * out["scaled_entropy"].squeeze(-1) + q)  # (H+1, B)
        return ((per_step * live).sum(1) / live.sum(1).clamp(min=1) * rho).mean()

    def train_step(self, batch: dict) -> dict[str, torch.Tensor]:
        self.train()
        data = {k: torch.as_tensor(v).to(self.device) for k, v in batch.items()}
        data["obs"] = self.observation({k: data[k] for k in self.obs_keys})
        data["action"] = data["action"].float()
        coef = {"consistency": self.c.consistency_coef, "reward": self.c.reward_coef,
                "value": self.c.value_coef, "termination": self.c.termination_coef}
        losses, zs, live = self.losses(data)
        total = sum(coef[k] * v for k, v in losses.items())
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        total.backward()
        distributed.average_gradients(self.model_params)  # data-parallel: the mean over the ranks
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model_params, self.c.grad_clip, foreach=True)
        # () bool, no host sync; NaN rewards could pass the two-hot loss as its end bin: the batch is checked too
        data_finite = torch.stack([torch.isfinite(v).all() for v in data.values() if v.is_floating_point()]).all()
        finite = distributed.all_true(torch.isfinite(total) & torch.isfinite(grad_norm) & data_finite)
        self.optimizers["model"].step(apply=finite)
        # the policy after the model step, on the updated Q-functions (as `TDMPC2._update` does)
        saved = self.scale.value.clone()
        pi_loss = self.policy_loss(zs, live)
        pi_loss.backward(inputs=list(self.model.pi.parameters()))
        distributed.average_gradients(self.model.pi.parameters())
        pi_grad_norm = torch.nn.utils.clip_grad_norm_(self.model.pi.parameters(), self.c.grad_clip, foreach=True)
        finite = finite & distributed.all_true(torch.isfinite(pi_loss) & torch.isfinite(pi_grad_norm))
        self.optimizers["pi"].step(apply=finite)
        self.model.update_target(self.c.tau, finite)
        with torch.no_grad():
            self.scale.value.copy_(torch.where(finite, self.scale.value, saved))
        self.model.eval()
        metrics = {f"loss/{k}": v.detach() for k, v in losses.items()}
        metrics.update({"loss/policy": pi_loss.detach(), "loss/total": total.detach(), "train/grad_norm": grad_norm,
                        "train/pi_grad_norm": pi_grad_norm, "train/q_scale": self.scale.value.clone(),
                        "train/nonfinite": (~finite).float()})
        return metrics

    def report(self, batch: dict, context: int = 5) -> dict[str, torch.Tensor]:
        """No decoder, so no open-loop video: nothing to report."""
        return {}

    # ------------------------------------------------------------------------------------------
    def state_dict(self, *args, **kwargs):
        return {"modules": super().state_dict(*args, **kwargs),
                "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()}}

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state["modules"], strict=strict, assign=assign)
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        return result

