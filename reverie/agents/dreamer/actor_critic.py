"""Actor and critic learnt only from trajectories imagined by the world model (DESIGN §4).

From every posterior state of the replayed batch (B·T starts, stop-gradient), imagine H steps with
the prior and the policy, then

    R^λ_t = r_{t+1} + γc_{t+1}((1 − λ)v(s_{t+1}) + λR^λ_{t+1}),   R^λ_H = v(s_H)
    adv_t = (R^λ_t − v(s_t)) / max(1, S),  S = EMA(P95(R^λ) − P5(R^λ))
    L_actor = −sg(w_t)·(sg(adv_t)·ln π(a_t|s_t) + η·H[π(·|s_t)])          (REINFORCE)
    L_actor = −sg(w_t)·(adv_t + η·H[π(·|s_t)])                              (dynamics backprop)
    L_critic = sg(w_t)·(twohot(R^λ_t) + 1.0·twohot(v_slow(s_t)))           (slow-critic regulariser)

with w_t the cumulative product of the predicted continue (γ folded in). With dynamics backprop
(`behavior.actor.grad`: Dreamer v1, and V2/2023 for continuous actions) the imagined trajectory
keeps its graph through the world model, the critic and the reparameterised actions, so R^λ is
differentiated with respect to the policy; only the actor's parameters take that gradient (the
agent routes each loss to its own modules). The replay value loss trains the critic on λ-returns
of the replayed sequence, bootstrapped from the imagined returns, and its gradient also reaches
the world model. Variants: `retnorm.kind=none` leaves advantages unscaled (V1/V2); the slow critic
is an EMA every update (V3) or a copy every 100 (V2's target network, `slow_rate=1, slow_every=100`)
and with `slow_target` it supplies the bootstrap values and the baseline (V2).

Several rewards (Plan2Explore's exploration actor, `explore.py`): each reward k has its own critic,
slow critic and return normaliser, and the actor follows the weighted mean of their advantages,

    adv_t = Σ_k w_k·(R^λ_{k,t} − v_k(s_t)) / max(1, S_k) / Σ_k w_k

(DreamerV3 2023 `ImagActorCritic`). The extrinsic reward (the world model's reward head) keeps the
attributes `critic`, `slow_critic`, `retnorm` and the loss `value`; a further reward `name` lives in
`intrinsic[name]` with the loss `value_name`. With the extrinsic reward alone (weight 1) this is the
single-critic loss above.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable

import torch
from torch import nn

from reverie.agents.dreamer.world_model import ScalarHead, WorldModel
from reverie.config import ActorConfig, BehaviorConfig
from reverie.kernels.compile import compiled
from reverie.kernels.precision import compute_dtype
from reverie.nn import maths as ops
from reverie.nn.distributions import BoundedNormal, MultiOneHot, TanhNormal
from reverie.nn.layers import MLP, Linear


class Actor(nn.Module):
    """Policy π(a|s): for discrete actions one-hot categoricals p = (1 − u)·softmax(logits) + u/K with
    u = `unimix`, by default 0: plain softmax, no mix computed (the current official policy; the
    2023 code mixed 1%); for continuous ones Normal(tanh(μ), σ) with σ ∈ [minstd, maxstd]
    (`bounded_normal`) or Dreamer v1's tanh-Normal (`tanh_normal`). Output layers scaled by
    `outscale`."""

    def __init__(self, feat_dim: int, act_space, cfg: ActorConfig, norm="rms", act="silu"):
        super().__init__()
        self.cfg = cfg
        self.discrete = act_space.discrete
        self.sizes = tuple(act_space.sizes)
        self.mlp = MLP(feat_dim, cfg.units, cfg.layers, norm, act)
        width = self.mlp.out_features
        if self.discrete:
            self.logits = Linear(width, act_space.dim, outscale=cfg.outscale)
        else:
            self.mean = Linear(width, act_space.dim, outscale=cfg.outscale)
            self.std = Linear(width, act_space.dim, outscale=cfg.outscale)

    def forward(self, feat: torch.Tensor):
        return self.dist(self.raw(feat))

    @compiled
    def raw(self, feat: torch.Tensor) -> torch.Tensor:
        """The head's raw outputs (…, A) for discrete or (…, 2A) [mean | std logit] for continuous."""
        x = self.mlp(feat)
        if self.discrete:
            return self.logits(x)
        return torch.cat([self.mean(x), self.std(x)], -1)

    def dist(self, raw: torch.Tensor):
        """The policy distribution for raw head outputs (see `raw`)."""
        if self.discrete:
            return MultiOneHot(raw, self.sizes, self.cfg.unimix)
        mean, std = raw.chunk(2, -1)
        if self.cfg.dist == "tanh_normal":
            return TanhNormal(mean, std, self.cfg.minstd, self.cfg.init_std)
        return BoundedNormal(mean, std, self.cfg.minstd, self.cfg.maxstd)


# r(s_t) at every imagined state: (world model, features (N, H+1, F), actions (N, H+1, A)) → (N, H+1)
RewardFn = Callable[[WorldModel, torch.Tensor, torch.Tensor], torch.Tensor]


def extrinsic_reward(wm: WorldModel, feat: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """The world model's reward head: (N, H+1, F) → (N, H+1)."""
    return wm.reward(feat).mean()


class ActorCritic(nn.Module):
    """An actor and one critic per reward (module docstring). `extr`: the weight of the extrinsic
    reward's advantage; `intrinsic`: {name: (weight, reward function)} of further rewards (the
    functions are called, not owned: a module behind one is registered where it is trained)."""

    def __init__(self, feat_dim: int, act_space, cfg: BehaviorConfig, norm="rms", act="silu",
                 extr: float = 1.0, intrinsic: dict[str, tuple[float, RewardFn]] | None = None):
        super().__init__()
        self.cfg = cfg
        self.discrete = act_space.discrete
        self.actor = Actor(feat_dim, act_space, cfg.actor, norm, act)
        self.critic, self.slow_critic, self.retnorm = self._value_model(feat_dim, cfg, norm, act)
        self.register_buffer("slow_updates", torch.zeros((), dtype=torch.int64))  # applied updates
        grad = cfg.actor.grad
        self.backprop = grad == "dynamics" or (grad == "auto" and not act_space.discrete)
        self.discount = 1.0 - 1.0 / cfg.horizon
        intrinsic = intrinsic or {}
        self.intrinsic = nn.ModuleDict()  # name → {critic, slow_critic, retnorm} of each further reward
        for name in intrinsic:
            critic, slow_critic, retnorm = self._value_model(feat_dim, cfg, norm, act)
            self.intrinsic[name] = nn.ModuleDict({"critic": critic, "slow_critic": slow_critic, "retnorm": retnorm})
        self.weights = {"": extr, **{name: weight for name, (weight, _) in intrinsic.items()}}
        self.reward_fns = {"": extrinsic_reward, **{name: fn for name, (_, fn) in intrinsic.items()}}

    @staticmethod
    def _value_model(feat_dim: int, cfg: BehaviorConfig, norm: str, act: str):
        """(critic, slow critic, return normaliser) of one reward."""
        c, r = cfg.critic, cfg.retnorm
        critic = ScalarHead(feat_dim, c.units, c.layers, c.dist, c.bins, c.outscale, norm, act)
        return critic, copy.deepcopy(critic).requires_grad_(False), ops.ReturnNormalizer(r.rate, r.limit, r.lo, r.hi)

    def value_models(self):
        """(name, critic, slow critic, return normaliser) per reward, the extrinsic one (name "") first."""
        yield "", self.critic, self.slow_critic, self.retnorm
        for name, m in self.intrinsic.items():
            yield name, m["critic"], m["slow_critic"], m["retnorm"]

    @torch.no_grad()
    def update_slow_critic(self, apply: torch.Tensor | None = None) -> None:
        """θ_slow ← (1 − rate)·θ_slow + rate·θ every `slow_every` applied updates, for every reward's
        critic; nothing moves where the bool tensor `apply` is False (a skipped update). No host sync."""
        pairs = [(s, p) for _, critic, slow_critic, _ in self.value_models()
                 for s, p in zip(slow_critic.parameters(), critic.parameters())]
        slow, fast = [s for s, _ in pairs], [p for _, p in pairs]
        c = self.cfg.critic
        if apply is None:
            apply = torch.ones((), dtype=torch.bool, device=slow[0].device)
        self.slow_updates += apply.long()
        due = apply & (self.slow_updates % c.slow_every == 0)
        weight = due.to(slow[0].dtype) * c.slow_rate  # () rate or 0
        torch._foreach_lerp_(slow, fast, [weight] * len(slow))

    def model_grad(self):
        """Gradients through the world model in imagination only for dynamics backprop."""
        return contextlib.nullcontext() if self.backprop else torch.no_grad()

    def imagine(self, wm: WorldModel, start: dict[str, torch.Tensor], horizon: int):
        """Roll the prior forward with actions from the policy.

        start: {"deter": (N, D), "stoch": (N, S, K)}. Returns features (N, H+1, F), the action
        taken in each of those states (N, H+1, A) — the last one sampled but not executed — and
        the policy's raw outputs there (N, H+1, ·). For REINFORCE the model runs without
        gradients and the policy keeps its graph (inputs detached), so the actor loss reuses these
        outputs instead of running the actor over every imagined state a second time. With
        dynamics backprop everything keeps its graph: reparameterised actions → model → features.
        """
        state = start
        model_grad = self.model_grad()
        with model_grad:
            feats = [wm.features(state)]
            dtype = compute_dtype(feats[0])  # every head reads these features: cast them once
            feats[0] = feats[0].to(dtype)
        actions, raws = [], []
        for t in range(horizon + 1):
            raw = self.actor.raw(feats[-1])
            raws.append(raw)
            with model_grad:
                action = self.actor.dist(raw if self.backprop else raw.detach()).sample()
                actions.append(action)
                if t < horizon:
                    state, feat = wm.imagine_step(state, action, dtype)
                    feats.append(feat)
        return torch.stack(feats, 1), torch.stack(actions, 1), torch.stack(raws, 1)

    def loss(self, wm: WorldModel, post: dict[str, torch.Tensor], data: dict[str, torch.Tensor], contdisc: bool):
        """Imagination losses (policy; value, and value_<name> per further reward) and the replay
        value loss (repval, extrinsic).

        post: posterior sequence {deter (B, T, D), stoch (B, T, S, K)} with gradients (the replay
        value loss trains the world model through it). Returns ({name: per-sample loss}, metrics).
        """
        B, T = data["is_first"].shape
        K = min(self.cfg.imag_last or T, T)  # start from the last K posterior states of each sequence
        post = {k: v[:, -K:] for k, v in post.items()}
        data = {k: v[:, -K:] for k, v in data.items()}
        start = {k: v.detach().flatten(0, 1) for k, v in post.items()}  # (B·K, ...)
        feat, action, policy_raw = self.imagine(wm, start, self.cfg.imag_horizon)  # (N, H+1, ·)
        with self.model_grad():
            rewards = {name: fn(wm, feat, action) for name, fn in self.reward_fns.items()}  # (N, H+1) each
            cont = wm.cont(feat).mean()  # (N, H+1): γ·(1 − terminal) when contdisc
        disc = 1.0 if contdisc else self.discount
        weight = torch.cumprod(disc * cont.detach(), 1) / disc  # (N, H+1)
        w = weight[:, :-1].detach()

        total = sum(self.weights.values())
        advs, returns, value_losses, metrics = [], {}, {}, {}
        for name, critic, slow_critic, retnorm in self.value_models():
            suffix = f"_{name}" if name else ""
            returns[name], adv_k, value_loss, mets = self.score(rewards[name], disc * cont, feat, critic,
                                                                slow_critic, retnorm)
            advs.append(adv_k * (self.weights[name] / total))  # (N, H)
            value_losses["value" + suffix] = w * value_loss
            metrics.update({k + suffix: v for k, v in mets.items()})
        adv = sum(advs)  # (N, H)

        policy = self.actor.dist(policy_raw)
        entropy = policy.entropy()[:, :-1]
        if self.backprop:  # the gradient of the return itself, through the model
            losses = {"policy": -w * (adv + self.cfg.actor.entropy * entropy)}
        else:
            logpi = policy.log_prob(action)[:, :-1]
            losses = {"policy": -w * (logpi * adv.detach() + self.cfg.actor.entropy * entropy)}
        losses.update(value_losses)
        metrics.update({"imag/adv_mag": adv.abs().mean(), "imag/cont": cont.mean(), "imag/weight": weight.mean(),
                        "imag/entropy": entropy.mean()})
        if self.cfg.repval:
            bootstrap = returns[""].detach()[:, 0].reshape(B, K)  # imagined extrinsic return from each posterior state
            losses["repval"] = self.replay_value_loss(post, data, bootstrap, wm)
        return losses, {k: v.detach() for k, v in metrics.items()}

    def score(self, reward, discount, feat, critic, slow_critic, retnorm):
        """One reward's λ-return R^λ (N, H), its normalised advantage (R^λ − v)/max(1, S) (N, H), its
        critic's loss (N, H) and metrics. reward, discount (N, H+1); feat (N, H+1, F)."""
        value_dist = critic(feat.detach())
        value = value_dist.mean().detach()  # (N, H+1)
        slow_value = slow_critic(feat.detach()).mean().detach()
        baseline = slow_value if self.cfg.critic.slow_target else value  # v(s_t) in the advantage
        if self.backprop:  # the bootstrap, differentiable through the imagined features
            bootstrap = (slow_critic if self.cfg.critic.slow_target else critic)(feat).mean()
        else:
            bootstrap = baseline  # the same values bootstrap the λ-returns
        ret = ops.lambda_return(reward, discount, self.cfg.lam, bootstrap)  # (N, H)
        if self.cfg.retnorm.kind == "percentile":
            if self.training:
                retnorm.update(ret)
            _, scale = retnorm.stats()
        else:
            scale = torch.ones((), device=ret.device)
        adv = (ret - baseline[:, :-1]) / scale  # (N, H)
        value_loss = self.critic_loss(value_dist, ret.detach(), slow_value)
        metrics = {"imag/return": ret.detach().mean(), "imag/value": value.mean(), "imag/reward": reward.mean(),
                   "imag/return_scale": scale}
        return ret, adv, value_loss, metrics

    def replay_value_loss(self, post, data, bootstrap, wm: WorldModel) -> torch.Tensor:
        """Critic loss towards λ-returns of the replayed sequence, bootstrapped from imagined returns.

        R_t = r_{t+1} + γ(1 − term_{t+1})((1 − λ')·bootstrap_{t+1} + λ'·R_{t+1}) with λ' = λ(1 − last_{t+1}).
        Returns (B, T − 1), masked where the step is the last of an episode.
        """
        feat = wm.features(post)  # (B, T, F), gradients reach the world model
        feat = feat.to(compute_dtype(feat))
        value_dist = self.critic(feat)
        slow_value = self.slow_critic(feat).mean().detach()
        discount = (1.0 - data["is_terminal"].float()) * self.discount
        lam = (1.0 - data["is_last"].float()) * self.cfg.lam
        ret = ops.lambda_return(data["reward"].float(), discount, lam, bootstrap.detach())  # (B, T-1)
        weight = 1.0 - data["is_last"].float()
        return weight[:, :-1] * self.critic_loss(value_dist, ret, slow_value)

    def critic_loss(self, value_dist, ret, slow_value) -> torch.Tensor:
        """loss(R^λ) + slow_reg·loss(v_slow) per step: value_dist over (N, T), ret (N, T − 1), slow
        value (N, T) → (N, T − 1). Both targets of the same outputs in one pass (`loss_sum`)."""
        targets = [torch.cat([ret, ret[:, -1:]], 1), slow_value]
        return value_dist.loss_sum(targets, [1.0, self.cfg.critic.slow_reg])[:, :-1]
