"""Model-predictive control with the cross-entropy method (Rubinstein 1999), as PlaNet plans
(Hafner et al. 2019, §3 and Algorithm 2): no policy network, a search over action sequences in the
learnt model at every env step.

For each start state, with a belief over action sequences of length H (per step and action dim:
Normal(μ, σ) for continuous actions, starting at N(0, 1); categorical probabilities for discrete
ones, starting uniform):

    repeat `iterations` times:
        draw C candidate sequences a_{1:H} from the belief (continuous ones clipped to [−1, 1])
        roll the prior forward: s_t = imagine(s_{t−1}, a_t)   (sampled latents, as PlaNet does)
        score J = Σ_{t=1..H} r̂(s_t) [+ v(s_H) with a value function]
        refit the belief to the `top_k` best: μ, σ = mean, std of the elite (σ biased)
                                              or p = class frequencies of the elite
    act with the first step of the belief: μ_1, or the most probable class of each sub-action

Any of our world models plans this way (it needs `rssm.imagine_step`, `features` and the reward
head); `value_fn` adds a learnt critic's value at the horizon (an actor-critic's critic, e.g.
DreamerV3's). Everything is batched over the N start states and C candidates at once; nothing
syncs with the host.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

ValueFn = Callable[[torch.Tensor], torch.Tensor]  # features (M, F) → values (M,)


class CEMPlanner:
    """CEM over action sequences; see the module docstring. `act_space` is an
    `reverie.envs.spaces.ActionSpace` (`discrete`, `dim`, `sizes`)."""

    def __init__(self, act_space, horizon: int = 12, candidates: int = 1000, iterations: int = 10,
                 top_k: int = 100, min_std: float = 0.0):
        if not 1 <= top_k <= candidates:
            raise ValueError(f"the planner needs 1 ≤ top_k ≤ candidates, got top_k={top_k}, candidates={candidates}")
        if horizon < 1 or iterations < 1:
            raise ValueError(f"the planner needs horizon ≥ 1 and iterations ≥ 1, got {horizon} and {iterations}")
        self.discrete = act_space.discrete
        self.dim = act_space.dim
        self.sizes = tuple(act_space.sizes) if self.discrete else ()
        self.horizon, self.candidates, self.iterations, self.top_k = horizon, candidates, iterations, top_k
        self.min_std = min_std

    @torch.no_grad()
    def plan(self, wm, state: dict[str, torch.Tensor], value_fn: ValueFn | None = None) -> torch.Tensor:
        """First actions (N, A) of the plans from N RSSM states {"deter": (N, D), "stoch": (N, S, K)}."""
        N, H, C, A = state["deter"].shape[0], self.horizon, self.candidates, self.dim
        device = state["deter"].device
        start = {key: value.repeat_interleave(C, 0) for key, value in state.items()}  # (N·C, ...)
        if self.discrete:
            belief = torch.cat([torch.full((N, H, n), 1.0 / n, device=device) for n in self.sizes], -1)  # probs
        else:
            belief = (torch.zeros(N, H, A, device=device), torch.ones(N, H, A, device=device))  # μ, σ
        for _ in range(self.iterations):
            actions = self.sample(belief, C)  # (N, C, H, A)
            score = self.score(wm, start, actions.flatten(0, 1), value_fn).view(N, C)  # (N, C)
            elite_index = score.topk(self.top_k, dim=1).indices  # (N, k)
            elite = actions.gather(1, elite_index[:, :, None, None].expand(N, self.top_k, H, A))  # (N, k, H, A)
            belief = self.refit(elite)
        if self.discrete:
            return self.mode(belief[:, 0])  # (N, A)
        return belief[0][:, 0]  # (N, A)

    def sample(self, belief, count: int) -> torch.Tensor:
        """`count` action sequences per start state: (N, count, H, A)."""
        if not self.discrete:
            mean, std = belief  # (N, H, A) each
            noise = torch.randn(mean.shape[0], count, *mean.shape[1:], device=mean.device)
            return (mean.unsqueeze(1) + std.unsqueeze(1) * noise).clamp(-1.0, 1.0)
        parts = []
        for probs in belief.split(self.sizes, -1):  # (N, H, n) per sub-action
            cdf = probs.cumsum(-1).unsqueeze(1)  # (N, 1, H, n)
            uniform = torch.rand(probs.shape[0], count, probs.shape[1], 1, device=probs.device)
            index = (cdf <= uniform).sum(-1).clamp_(max=probs.shape[-1] - 1)  # (N, count, H): inverse CDF
            parts.append(F.one_hot(index, probs.shape[-1]).float())
        return torch.cat(parts, -1)

    def refit(self, elite: torch.Tensor):
        """The belief that fits the elite sequences (N, k, H, A)."""
        if self.discrete:
            return elite.mean(1)  # class frequencies per sub-action block: (N, H, A)
        return elite.mean(1), elite.std(1, unbiased=False).clamp(min=self.min_std)

    def mode(self, probs: torch.Tensor) -> torch.Tensor:
        """One-hot of the most probable class of each sub-action: (N, A) → (N, A)."""
        return torch.cat([F.one_hot(p.argmax(-1), p.shape[-1]).float() for p in probs.split(self.sizes, -1)], -1)

    def score(self, wm, start: dict[str, torch.Tensor], actions: torch.Tensor,
              value_fn: ValueFn | None) -> torch.Tensor:
        """Summed predicted reward of each sequence (M, H, A) from the start states (M, ...): (M,)."""
        state, total = start, 0.0
        for t in range(actions.shape[1]):
            state = wm.rssm.imagine_step(state, actions[:, t])
            feat = wm.features(state)
            total = total + wm.reward(feat).mean().float()
        if value_fn is not None:
            total = total + value_fn(feat).float()
        return total
