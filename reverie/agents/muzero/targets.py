"""MuZero's training targets for the K + 1 unroll steps of a replayed window (Schrittwieser et al.
2020, Appendix G), with episode ends handled as the paper's absorbing states.

A window holds T = K + n + 1 replay steps j = 0 … T−1; step j stores the observation o_j, the
action taken there, the search policy π_j, and the reward r_j and flags of *arriving* at o_j. Step j
is in o_0's episode while no `is_first` appears in 1 … j; let e be its last such step. For unroll
step k = 0 … K, bootstrapping at b_k = min(k + n, e):

    z_k = Σ_{j=k+1}^{b_k} γ^{j−k−1} r_j + γ^{b_k−k} · v̄(o_{b_k}) · (1 − terminal_{b_k})      (k ≤ e)

with v̄ the target network's value. Past the episode's end (k > e) the step is absorbing when the
episode terminated at e (value, reward 0, both trained) and unknown when it was cut by a time
limit (masked). Policy targets count for k ≤ e at non-terminal steps whose stored policy is set
(random prefill steps store zeros); reward targets u_k = r_k for 1 ≤ k ≤ e.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class UnrollTargets(NamedTuple):
    value: torch.Tensor  # (B, K + 1) z_k
    value_mask: torch.Tensor  # (B, K + 1)
    reward: torch.Tensor  # (B, K + 1) u_k (entry 0 unused)
    reward_mask: torch.Tensor  # (B, K + 1) (entry 0 is 0)
    policy_mask: torch.Tensor  # (B, K + 1)
    observed: torch.Tensor  # (B, K + 1) o_k belongs to o_0's episode (the consistency loss's mask)


def in_episode(is_first: torch.Tensor) -> torch.Tensor:
    """(B, T) bool → (B, T) float: 1 while no episode started after step 0."""
    starts = is_first[:, 1:].float()
    return torch.cat([torch.ones_like(starts[:, :1]), (torch.cumsum(starts, 1) == 0).float()], 1)


def unroll_targets(reward: torch.Tensor, is_first: torch.Tensor, is_terminal: torch.Tensor,
                   bootstrap: torch.Tensor, policy: torch.Tensor, unroll: int, td_steps: int,
                   discount: float) -> UnrollTargets:
    """The module docstring's targets. reward, is_first, is_terminal, bootstrap (v̄(o_j)): (B, T),
    policy (B, T, A), T ≥ unroll + td_steps + 1."""
    B, T = reward.shape
    K, n = unroll, td_steps
    if T < K + n + 1:
        raise ValueError(f"a window of {T} steps cannot give {K} unroll steps with {n}-step targets (needs {K + n + 1})")
    live = in_episode(is_first)  # (B, T)
    last = live.sum(1).long() - 1  # (B,) e
    rows = torch.arange(B, device=reward.device)
    terminal = is_terminal.float()
    ended_terminal = terminal[rows, last]  # (B,)
    steps = torch.arange(T, device=reward.device)  # (T,)
    values, value_masks, rewards, reward_masks, policy_masks, observed = [], [], [], [], [], []
    for k in range(K + 1):
        b = torch.clamp(last, max=k + n)  # (B,) bootstrap step
        count = (steps[None] > k) & (steps[None] <= b[:, None])  # (B, T): rewards summed
        power = torch.clamp(steps - k - 1, min=0).float()  # (T,) exponent of r_j
        returns = (reward * count * discount ** power).sum(1)
        boot = discount ** (b - k).clamp(min=0).float() * bootstrap[rows, b] * (1 - terminal[rows, b])
        inside = (last >= k).float()  # (B,)
        absorbing = (1 - inside) * ended_terminal
        values.append(inside * (returns + boot))  # 0 past the end
        value_masks.append(inside + absorbing)
        rewards.append(inside * reward[:, k] if k else torch.zeros_like(inside))
        reward_masks.append(inside + absorbing if k else torch.zeros_like(inside))
        policy_set = (policy[:, k].sum(-1) > 0).float()
        policy_masks.append(inside * (1 - terminal[:, k]) * policy_set)
        observed.append(inside)
    return UnrollTargets(*(torch.stack(x, 1) for x in (values, value_masks, rewards, reward_masks,
                                                        policy_masks, observed)))


def value_prefix_targets(reward: torch.Tensor, horizon: int) -> torch.Tensor:
    """EfficientZero's value-prefix targets: (B, K + 1) rewards u_k (entry 0 unused) → (B, K + 1)
    with entry k = Σ u_i over i = ⌊(k − 1)/H⌋·H + 1 … k, the rewards since the last restart."""
    out = torch.zeros_like(reward)
    for k in range(1, reward.shape[1]):
        start = (k - 1) // horizon * horizon + 1
        out[:, k] = reward[:, start:k + 1].sum(1)
    return out
