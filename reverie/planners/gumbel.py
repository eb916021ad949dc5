"""Gumbel MuZero's search (Danihelka et al. 2022, "Policy improvement by planning with Gumbel",
ICLR): it improves the policy even with very few simulations (e.g. 16), which suits a CPU.

Root: draw g(a) ~ Gumbel(0, 1) once; the m = min(`max_considered`, valid actions) actions of
largest g + logits are tried, and Sequential Halving spends the budget n on them in phases —
each phase gives every remaining action max(1, ⌊n / (⌈log2 m⌉ · m_phase)⌋) more visits, then
keeps the better half (at least 2). Which action is due next follows from visit counts alone:
among the actions with the phase's visit count, the one of largest g + logits + σ(q̂).
The action taken is the survivor: the largest g + logits + σ(q̂) among the most visited.

Interior nodes select deterministically (§5): a* = argmax_a π'(a) − N(a) / (1 + Σ_b N(b)), with
the improved policy π' = softmax(logits + σ(q̂)) and q̂ the completed Q values: Q(s, a) where
visited, else the mixed value estimate (eq. 33)

    v_mix = (v̂ + Σ_b N(b) / Σ_{b: N(b)>0} π(b) · Σ_{a: N(a)>0} π(a) Q(a)) / (1 + Σ_b N(b)),

rescaled to [0, 1] over the node's actions and σ(q̂) = (c_visit + max_b N(b)) · c_scale · q̂,
c_visit = 50, c_scale = 0.1. The policy target is π' at the root.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from .tree import SearchModel, SearchResult, State, Tree, new_tree, run_search


def considered_visit_sequence(max_considered: int, simulations: int) -> tuple[int, ...]:
    """The visit count the next root action must have at each simulation under Sequential Halving
    of `simulations` over `max_considered` actions (the table of the module docstring)."""
    if max_considered <= 1:
        return tuple(range(simulations))
    phases = math.ceil(math.log2(max_considered))
    sequence: list[int] = []
    visits = [0] * max_considered
    considered = max_considered
    while len(sequence) < simulations:
        for _ in range(max(1, simulations // (phases * considered))):
            sequence.extend(visits[:considered])
            visits[:considered] = [v + 1 for v in visits[:considered]]
        considered = max(2, considered // 2)
    return tuple(sequence[:simulations])


@lru_cache(maxsize=64)
def considered_visit_table(max_considered: int, simulations: int) -> tuple[tuple[int, ...], ...]:
    """Row m: the sequence for m considered actions, m = 0..max_considered."""
    return tuple(considered_visit_sequence(m, simulations) for m in range(max_considered + 1))


def completed_qvalues(tree: Tree, node: torch.Tensor, value_scale: float = 0.1,
                      visit_init: float = 50.0) -> torch.Tensor:
    """σ(q̂) of every action at `node` (B,) → (B, A); see the module docstring."""
    b = tree.rows()
    visits = tree.children_visits[b, node]  # (B, A)
    q = tree.qvalues(node)
    prior = torch.softmax(tree.children_logits[b, node], -1)
    total = visits.sum(-1)  # (B,)
    visited = visits > 0
    visited_prior = torch.where(visited, prior, torch.zeros_like(prior)).sum(-1).clamp(min=torch.finfo(q.dtype).tiny)
    weighted_q = torch.where(visited, prior * q, torch.zeros_like(q)).sum(-1)
    mixed = (tree.raw_values[b, node] + total * weighted_q / visited_prior) / (1 + total)  # (B,)
    completed = torch.where(visited, q, mixed[:, None])
    low, high = completed.min(-1, keepdim=True).values, completed.max(-1, keepdim=True).values
    completed = (completed - low) / (high - low).clamp(min=1e-8)
    return (visit_init + visits.max(-1, keepdim=True).values) * value_scale * completed


def _halving_scores(tree: Tree, gumbel: torch.Tensor, due_visits: torch.Tensor, value_scale: float,
                    visit_init: float) -> torch.Tensor:
    """g + logits + σ(q̂) at the root, −inf for actions whose visit count is not `due_visits` (B,)."""
    root = torch.zeros(tree.batch_size, dtype=torch.long, device=gumbel.device)
    logits = tree.children_logits[:, 0]
    logits = logits - logits.max(-1, keepdim=True).values
    score = (gumbel + logits + completed_qvalues(tree, root, value_scale, visit_init)).clamp(min=-1e9)
    due = tree.children_visits[:, 0] == due_visits[:, None]
    return score.masked_fill(~due | tree.invalid_actions, float("-inf"))


@torch.no_grad()
def gumbel_search(model: SearchModel, root: State, simulations: int, *, max_considered: int = 16,
                  value_scale: float = 0.1, visit_init: float = 50.0, gumbel_scale: float = 1.0,
                  invalid_actions: torch.Tensor | None = None,
                  generator: torch.Generator | None = None) -> SearchResult:
    """Gumbel MuZero's search from B root latents; `gumbel_scale` 0 makes it deterministic (evaluation)."""
    if simulations < 1:
        raise ValueError(f"simulations must be ≥ 1, got {simulations}")
    tree = new_tree(model, root, simulations, invalid_actions)
    B, A = tree.batch_size, tree.num_actions
    device = tree.node_values.device
    uniform = torch.rand(B, A, generator=generator, device=device).clamp(1e-20, 1 - 1e-7)
    gumbel = gumbel_scale * -torch.log(-torch.log(uniform))  # (B, A)
    considered = torch.clamp((~tree.invalid_actions).sum(-1), max=max_considered)  # (B,)
    table = torch.tensor(considered_visit_table(max_considered, simulations), device=device,
                         dtype=tree.children_visits.dtype)  # (max_considered + 1, simulations)

    def select_root(tree: Tree, node: torch.Tensor) -> torch.Tensor:
        done = tree.children_visits[:, 0].sum(-1).long().clamp(max=simulations - 1)
        return _halving_scores(tree, gumbel, table[considered, done], value_scale, visit_init).argmax(-1)

    def select_interior(tree: Tree, node: torch.Tensor) -> torch.Tensor:
        b = tree.rows()
        visits = tree.children_visits[b, node]
        improved = torch.softmax(tree.children_logits[b, node] + completed_qvalues(tree, node, value_scale, visit_init), -1)
        return (improved - visits / (1 + visits.sum(-1, keepdim=True))).argmax(-1)

    run_search(tree, model, simulations, select_root, select_interior)
    root = torch.zeros(B, dtype=torch.long, device=device)
    policy = torch.softmax(tree.children_logits[:, 0] + completed_qvalues(tree, root, value_scale, visit_init), -1)
    most_visits = tree.children_visits[:, 0].max(-1).values
    action = _halving_scores(tree, gumbel, most_visits, value_scale, visit_init).argmax(-1)
    return SearchResult(action, policy, tree.node_values[:, 0], tree)
