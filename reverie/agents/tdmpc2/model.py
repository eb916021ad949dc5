"""The TD-MPC2 implicit world model (Hansen et al. 2024, §3; nicklashansen/tdmpc2
`common/world_model.py`, `common/layers.py`, `common/math.py`): no decoder, everything in a latent.

    z = h(s)                     encoder: MLP (LayerNorm + Mish) → SimNorm
    z' = d(z, a)                 latent dynamics: MLP → SimNorm
    r̂ = R(z, a)                  reward: two-hot logits over `bins` bins in symlog space [vmin, vmax]
    q̂_i = Q_i(z, a), i = 1..K    an ensemble of K Q-functions (dropout after the first layer), two-hot
    a ~ π(·|z)                   policy prior: tanh-squashed Gaussian
    p_end = T(z)                 termination probability (episodic tasks only)

SimNorm splits a vector into groups of `simnorm_dim` and takes a softmax in each (each group sums to
1). Every hidden layer is Linear → (dropout) → LayerNorm → Mish; weights ~ truncated N(0, 0.02),
biases 0; the reward's and the Q-functions' output layers start at zero. The target Q-ensemble is a
Polyak copy (`update_target`) that always runs without dropout.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from reverie import distributed
from reverie.nn import maths as ops
from reverie.nn.distributions import TwoHot


class SimNorm(nn.Module):
    """Softmax over consecutive groups of `dim` entries of the last axis: (…, G·dim) → (…, G·dim)."""

    def __init__(self, dim: int = 8):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x.unflatten(-1, (-1, self.dim)), -1).flatten(-2)


class NormedLinear(nn.Module):
    """Linear → dropout (optional) → LayerNorm → activation (Mish, or `act`)."""

    def __init__(self, in_features: int, out_features: int, dropout: float = 0.0, act: nn.Module | None = None):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.norm = nn.LayerNorm(out_features)
        self.act = act if act is not None else nn.Mish()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.dropout(self.linear(x))))


def mlp(in_dim: int, hidden: list[int], out_dim: int, out_act: nn.Module | None = None,
        dropout: float = 0.0) -> nn.Sequential:
    """TD-MPC2's MLP: normed hidden layers (dropout on the first only), then a plain linear output,
    or a normed one with `out_act` (SimNorm for the encoder and the dynamics)."""
    dims = [in_dim, *hidden]
    layers: list[nn.Module] = [NormedLinear(a, b, dropout if i == 0 else 0.0) for i, (a, b) in
                               enumerate(itertools.pairwise(dims))]
    layers.append(NormedLinear(dims[-1], out_dim, act=out_act) if out_act is not None else nn.Linear(dims[-1], out_dim))
    return nn.Sequential(*layers)


def init_weights(module: nn.Module) -> None:
    """Truncated N(0, 0.02) weights (cut at ±2, absolute: torch's default) and zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)


def output_layer(net: nn.Sequential) -> nn.Linear:
    return net[-1] if isinstance(net[-1], nn.Linear) else net[-1].linear


class GaussianPolicy(nn.Module):
    """π(·|z): mean and log-std from an MLP, log σ = lo + (hi − lo)·(tanh(x) + 1)/2, a = tanh(μ + σε).

    Returns the action, the squashed mean and the entropies the TD-MPC2 policy loss uses: `entropy`
    = −ln π(a|z) (with the tanh correction) and `scaled_entropy` = entropy · (A·ln N(ε)) / ln π(a|z), as
    `TDMPC2.update_pi` computes it."""

    def __init__(self, latent_dim: int, hidden: list[int], action_dim: int, log_std_min: float, log_std_max: float):
        super().__init__()
        self.net = mlp(latent_dim, hidden, 2 * action_dim)
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        mean, raw_log_std = self.net(z).chunk(2, -1)  # (…, A) each
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (torch.tanh(raw_log_std) + 1)
        eps = torch.randn_like(mean)
        log_prob = (-0.5 * eps.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1, keepdim=True)  # (…, 1)
        scaled_log_prob = log_prob * eps.shape[-1]
        action = torch.tanh(mean + eps * log_std.exp())
        log_prob = log_prob - torch.log(F.relu(1 - action.square()) + 1e-6).sum(-1, keepdim=True)
        entropy_scale = scaled_log_prob / (log_prob + 1e-8)
        return {"action": action, "mean": torch.tanh(mean), "entropy": -log_prob,
                "scaled_entropy": -log_prob * entropy_scale}


class QEnsemble(nn.Module):
    """K Q-functions over [z, a] evaluated as one batched MLP: weights (K, in, out) per layer.

    Each member is Linear → dropout (first layer) → LayerNorm → Mish, …, Linear → `bins` logits;
    `forward(x, params)` takes explicit parameters so the target and the detached copies reuse it."""

    def __init__(self, members: int, in_dim: int, hidden: list[int], out_dim: int, dropout: float):
        super().__init__()
        dims = [in_dim, *hidden, out_dim]
        self.members, self.dropout, self.layers = members, dropout, len(dims) - 1
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.norm_weights = nn.ParameterList()
        self.norm_biases = nn.ParameterList()
        for i, (a, b) in enumerate(itertools.pairwise(dims)):
            weight = torch.empty(members, a, b)
            nn.init.trunc_normal_(weight, std=0.02)
            if i == self.layers - 1:
                weight.zero_()  # the output layer starts at zero
            self.weights.append(nn.Parameter(weight))
            self.biases.append(nn.Parameter(torch.zeros(members, 1, b)))
            if i < self.layers - 1:
                self.norm_weights.append(nn.Parameter(torch.ones(members, 1, b)))
                self.norm_biases.append(nn.Parameter(torch.zeros(members, 1, b)))

    def params(self) -> list[torch.Tensor]:
        return [*self.weights, *self.biases, *self.norm_weights, *self.norm_biases]

    def forward(self, x: torch.Tensor, params: list[torch.Tensor] | None = None, training: bool = False) -> torch.Tensor:
        """x (…, in) → logits (K, …, out), with dropout when `training`."""
        p = self.params() if params is None else params
        n = self.layers
        weights, biases, norm_w, norm_b = p[:n], p[n:2 * n], p[2 * n:3 * n - 1], p[3 * n - 1:]
        shape = x.shape[:-1]
        h = x.reshape(1, -1, x.shape[-1]).expand(self.members, -1, -1)  # (K, M, in)
        for i in range(n):
            h = torch.baddbmm(biases[i], h, weights[i])  # (K, M, out)
            if i < n - 1:
                if i == 0 and self.dropout:
                    h = F.dropout(h, self.dropout, training)
                h = F.layer_norm(h, h.shape[-1:]) * norm_w[i] + norm_b[i]
                h = F.mish(h)
        return h.reshape(self.members, *shape, h.shape[-1])


class TDMPC2Model(nn.Module):
    """Encoder, dynamics, reward, termination, policy prior and Q-ensemble with its target copy; see
    the module docstring. `cfg` is the `tdmpc2` config section."""

    def __init__(self, obs_dim: int, action_dim: int, cfg):
        super().__init__()
        self.cfg = cfg
        latent, hidden = cfg.latent_dim, [cfg.mlp_dim] * 2
        self.encoder = mlp(obs_dim, [cfg.enc_dim] * max(cfg.enc_layers - 1, 1), latent, SimNorm(cfg.simnorm_dim))
        self.dynamics = mlp(latent + action_dim, hidden, latent, SimNorm(cfg.simnorm_dim))
        self.reward_net = mlp(latent + action_dim, hidden, cfg.num_bins)
        self.termination_net = mlp(latent, hidden, 1) if cfg.episodic else None
        self.pi = GaussianPolicy(latent, hidden, action_dim, cfg.log_std_min, cfg.log_std_max)
        init_weights(self)
        nn.init.zeros_(output_layer(self.reward_net).weight)
        self.qs = QEnsemble(cfg.num_q, latent + action_dim, hidden, cfg.num_bins, cfg.dropout)
        self.target_count = len(self.qs.params())  # the Polyak copy lives in buffers target_q_<i>
        for i, tensor in enumerate(self.qs.params()):
            self.register_buffer(f"target_q_{i}", tensor.detach().clone())
        self.register_buffer("bins", torch.linspace(cfg.vmin, cfg.vmax, cfg.num_bins), persistent=False)

    def _targets(self) -> list[torch.Tensor]:
        return [getattr(self, f"target_q_{i}") for i in range(self.target_count)]

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        return self.encoder(obs)

    def next(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.dynamics(torch.cat([z, a], -1))

    def reward(self, z: torch.Tensor, a: torch.Tensor) -> TwoHot:
        return TwoHot(self.reward_net(torch.cat([z, a], -1)), self.bins, symlog=True)

    def termination_logit(self, z: torch.Tensor) -> torch.Tensor:
        return self.termination_net(z).squeeze(-1)

    def q_logits(self, z: torch.Tensor, a: torch.Tensor, which: str = "online") -> torch.Tensor:
        """(K, …, bins): "online" (with dropout in training), "detached" (the online weights without
        gradients into them) or "target" (the Polyak copy); the last two without dropout."""
        x = torch.cat([z, a], -1)
        if which == "online":
            return self.qs(x, training=self.training)
        params = self._targets() if which == "target" else [p.detach() for p in self.qs.params()]
        return self.qs(x, params)

    def q(self, z: torch.Tensor, a: torch.Tensor, which: str = "online", reduce: str = "min") -> torch.Tensor:
        """The min or mean of two members drawn at random (TD-MPC2's `Q(..., return_type)`): (…,)."""
        logits = self.q_logits(z, a, which)
        pick = torch.randperm(logits.shape[0], device=logits.device)[:2]
        values = ops.symexp(ops.twohot_logits_mean(logits[pick], self.bins))  # (2, …)
        return values.min(0).values if reduce == "min" else values.mean(0)

    @torch.no_grad()
    def update_target(self, tau: float, apply: torch.Tensor | None = None) -> None:
        """θ_target ← θ_target + τ·(θ − θ_target), gated by `apply` (a bool 0-d tensor) when given."""
        targets = self._targets()
        rate = torch.full((), tau, device=targets[0].device)
        if apply is not None:
            rate = rate * apply.to(rate.device).float()
        torch._foreach_lerp_(targets, [p.detach() for p in self.qs.params()], [rate] * len(targets))


class RunningScale(nn.Module):
    """TD-MPC2's Q scale for the policy loss: S ← S + τ·(max(1, P95 − P5) − S) of a batch, S₀ = 1."""

    def __init__(self, tau: float = 0.01):
        super().__init__()
        self.tau = tau
        self.register_buffer("value", torch.ones(()))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        values = distributed.gather_rows(x.detach().float().flatten())  # every rank's batch
        lo, hi = torch.quantile(values, torch.tensor([0.05, 0.95], device=x.device))
        self.value.lerp_(torch.clamp(hi - lo, min=1.0), self.tau)
