"""Model-predictive path integral control (MPPI) in a learnt latent model, as TD-MPC2 plans
(Hansen et al. 2024, "TD-MPC2", §3.3 and its `tdmpc2.py` `_plan` / `_estimate_value`).

For each of N start states z_0, a Gaussian belief over action sequences a_{0:H−1}, independent per
step and action dimension: mean μ (zeros, or the previous plan shifted one step: warm start) and
std σ = `max_std`. `policy_samples` of the C candidates are rollouts of the policy prior (drawn
once, before the iterations); the other C − P are redrawn every iteration. Then, `iterations` times:

    a^(c) ~ N(μ, σ²), clipped to [−1, 1]                 c = P+1..C
    G = Σ_{t<H} γ^t (1 − d_t) r̂(z_t, a_t) + γ^H (1 − d_H) V(z_H)    (`rollout_return`)
        z_{t+1} = f(z_t, a_t);  d_t = 1 once a termination probability > 0.5 was seen (episodic)
    E = the `elites` candidates of highest G; weights ω_e = softmax(τ·G_e) over E, τ = `temperature`
    μ = Σ_e ω_e a^(e),   σ = sqrt(Σ_e ω_e (a^(e) − μ)²) clipped to [`min_std`, `max_std`]

and act with the first step of one elite drawn with probability ω_e, plus σ_0·noise when not in
evaluation mode, clipped to [−1, 1]. The returned mean is the next step's warm start.

The planner needs only a `LatentModel`: any of our world models plans this way once it is wrapped
as one (TD-MPC2's encoder-free latent and Q-ensemble, or DreamerV3's RSSM with its reward head and
critic). All N start states and C candidates go through the model as one batch of N·C; no
gradients, no host syncs, fixed shapes.
"""

from __future__ import annotations

from typing import Protocol

import torch

State = dict[str, torch.Tensor]  # {name: (M, ...)}


class LatentModel(Protocol):
    """What MPPI needs from a world model; every tensor has M rows (start states × candidates)."""

    def step(self, state: State, action: torch.Tensor) -> tuple[State, torch.Tensor]:
        """One latent step: the next state and the predicted reward of taking `action` (M, A) → (M,)."""

    def value(self, state: State) -> torch.Tensor:
        """The value estimate at the horizon, (M,) (TD-MPC2: Q(z, π(z)) averaged over two heads)."""

    def policy(self, state: State) -> torch.Tensor | None:
        """Actions (M, A) in [−1, 1] sampled from the policy prior, or None without one."""

    def termination(self, state: State) -> torch.Tensor | None:
        """Probability (M,) that the episode ended on reaching `state`, or None (non-episodic)."""


def repeat_rows(state: State, count: int) -> State:
    """Each of the N rows `count` times in a row: (N, ...) → (N·count, ...)."""
    return {key: value.repeat_interleave(count, 0) for key, value in state.items()}


class MPPIPlanner:
    """MPPI over continuous action sequences in [−1, 1]^A; see the module docstring. Defaults are
    TD-MPC2's (`config.yaml`: horizon 3, iterations 6, num_samples 512, num_elites 64, num_pi_trajs
    24, min_std 0.05, max_std 2, temperature 0.5). Holds no parameters and no state."""

    def __init__(self, action_dim: int, horizon: int = 3, iterations: int = 6, samples: int = 512,
                 elites: int = 64, policy_samples: int = 24, *, min_std: float = 0.05, max_std: float = 2.0,
                 temperature: float = 0.5, discount: float = 0.99):
        if not 1 <= elites <= samples:
            raise ValueError(f"MPPI needs 1 ≤ elites ≤ samples, got {elites} and {samples}")
        if not 0 <= policy_samples < samples:
            raise ValueError(f"MPPI needs 0 ≤ policy_samples < samples, got {policy_samples} and {samples}")
        if horizon < 1 or iterations < 1:
            raise ValueError(f"MPPI needs horizon ≥ 1 and iterations ≥ 1, got {horizon} and {iterations}")
        if not 0.0 < min_std <= max_std or temperature <= 0.0:
            raise ValueError(f"MPPI needs 0 < min_std ≤ max_std and temperature > 0, got {min_std}, "
                             f"{max_std} and {temperature}")
        self.action_dim, self.horizon, self.iterations = action_dim, horizon, iterations
        self.samples, self.elites, self.policy_samples = samples, elites, policy_samples
        self.min_std, self.max_std, self.temperature, self.discount = min_std, max_std, temperature, discount

    def initial_mean(self, n: int, device=None) -> torch.Tensor:
        """The belief mean of a fresh episode: zeros (n, H, A)."""
        return torch.zeros(n, self.horizon, self.action_dim, device=device)

    def warm_start(self, mean: torch.Tensor) -> torch.Tensor:
        """The previous plan's mean shifted one step: μ_t ← μ_{t+1}, zeros at the end. (N, H, A)."""
        return torch.cat([mean[:, 1:], torch.zeros_like(mean[:, :1])], 1)

    @torch.no_grad()
    def plan(self, model: LatentModel, state: State, prev_mean: torch.Tensor | None = None,
             eval_mode: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Actions (N, A) for N start states {name: (N, ...)} and the final mean (N, H, A) to pass
        back as `prev_mean` at the next env step of the same envs (None: a fresh episode; the rows of
        envs that restarted should be zeroed by the caller, e.g. with `torch.where(is_first, ...)`)."""
        some = next(iter(state.values()))
        N, C, P, H, A, k = some.shape[0], self.samples, self.policy_samples, self.horizon, self.action_dim, self.elites
        device = some.device
        mean = self.initial_mean(N, device) if prev_mean is None else self.warm_start(prev_mean)
        std = torch.full_like(mean, self.max_std)
        prior = self.policy_rollouts(model, state, P)  # (N, P, H, A) or None
        if prior is None:
            P = 0
        start = repeat_rows(state, C)  # (N·C, ...)
        for _ in range(self.iterations):
            noise = torch.randn(N, C - P, H, A, device=device)
            actions = (mean.unsqueeze(1) + std.unsqueeze(1) * noise).clamp(-1.0, 1.0)  # (N, C − P, H, A)
            if prior is not None:
                actions = torch.cat([prior, actions], 1)  # (N, C, H, A)
            value = self.rollout_return(model, start, actions.flatten(0, 1)).view(N, C).nan_to_num(0.0)
            elite_value, index = value.topk(k, dim=1)  # (N, k)
            elite = actions.gather(1, index[:, :, None, None].expand(N, k, H, A))  # (N, k, H, A)
            weight = torch.softmax(self.temperature * elite_value, 1)  # (N, k): exp(τ(G − max G)) / Σ
            w = weight[:, :, None, None]
            mean = (w * elite).sum(1)  # (N, H, A)
            std = (w * (elite - mean.unsqueeze(1)).square()).sum(1).sqrt().clamp(self.min_std, self.max_std)
        chosen = torch.multinomial(weight, 1).squeeze(1)  # (N,): one elite per env, drawn by ω
        action = elite[torch.arange(N, device=device), chosen, 0]  # (N, A)
        if not eval_mode:
            action = action + std[:, 0] * torch.randn_like(action)
        return action.clamp(-1.0, 1.0), mean

    def policy_rollouts(self, model: LatentModel, state: State, count: int) -> torch.Tensor | None:
        """`count` action sequences per start state from the policy prior: (N, count, H, A), or None."""
        if count == 0:
            return None
        z = repeat_rows(state, count)
        actions = []
        for t in range(self.horizon):
            action = model.policy(z)
            if action is None:
                return None
            actions.append(action)
            if t < self.horizon - 1:
                z, _ = model.step(z, action)
        N = next(iter(state.values())).shape[0]
        return torch.stack(actions, 1).view(N, count, self.horizon, self.action_dim)

    @torch.no_grad()
    def rollout_return(self, model: LatentModel, state: State, actions: torch.Tensor) -> torch.Tensor:
        """G of each action sequence (M, H, A) from start states (M, ...): (M,); see the module docstring."""
        total = torch.zeros(actions.shape[0], device=actions.device)
        discount = 1.0
        ended = torch.zeros_like(total)  # d: 1 once the episode is predicted to have ended
        for t in range(actions.shape[1]):
            state, reward = model.step(state, actions[:, t])
            total = total + discount * (1.0 - ended) * reward.float()
            discount = discount * self.discount
            ends = model.termination(state)
            if ends is not None:
                ended = torch.clamp(ended + (ends > 0.5).float(), max=1.0)
        return total + discount * (1.0 - ended) * model.value(state).float()
