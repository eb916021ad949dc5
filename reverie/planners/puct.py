"""MuZero's tree search (Schrittwieser et al. 2020, Appendix B): pUCT selection over min-max
normalised values, Dirichlet noise on the root prior, discounted backup, and the root's visit
counts as the policy target.

At node s, with N(s) = Σ_b N(s, b) visits of its children, descend along

    a* = argmax_a  Q̄(s, a) + P(s, a) · √N(s) / (1 + N(s, a)) · (c1 + log((N(s) + c2 + 1) / c2))

where Q̄(s, a) = (Q − min) / (max − min) is Q(s, a) = r + γ·V(child) normalised by the smallest
and largest Q backed up anywhere in that tree so far (Q̄ = 0 for an unvisited child, Q itself
while max ≤ min), c1 = 1.25, c2 = 19652. At the root the prior is
P ← (1 − ε)·P + ε·Dir(α) (ε = 0.25; α = 0.3 in chess, 0.25 in Atari per the paper's pseudocode).
Ties go to the lowest action index.
"""

from __future__ import annotations

import torch

from .tree import SearchModel, SearchResult, State, Tree, new_tree, run_search


class MinMaxStats:
    """Per-tree running min and max of the Q values seen during backup (MuZero's `MinMaxStats`)."""

    def __init__(self, batch_size: int, device: torch.device):
        self.low = torch.full((batch_size,), float("inf"), device=device)
        self.high = torch.full((batch_size,), float("-inf"), device=device)

    def update(self, active: torch.Tensor, q: torch.Tensor) -> None:
        self.low = torch.where(active, torch.minimum(self.low, q), self.low)
        self.high = torch.where(active, torch.maximum(self.high, q), self.high)

    def normalise(self, q: torch.Tensor) -> torch.Tensor:
        """(B, A) → (B, A), against each tree's own range."""
        low, high = self.low[:, None], self.high[:, None]
        spread = high - low
        return torch.where(spread > 0, (q - low) / spread.clamp(min=1e-12), q)


def puct_scores(tree: Tree, node: torch.Tensor, stats: MinMaxStats, prior: torch.Tensor,
                c1: float = 1.25, c2: float = 19652.0) -> torch.Tensor:
    """The pUCT score of every action at `node` (B,), given its prior probabilities (B, A)."""
    b = tree.rows()
    visits = tree.children_visits[b, node]  # (B, A)
    total = visits.sum(-1, keepdim=True)  # (B, 1)
    exploration = c1 + torch.log((total + c2 + 1) / c2)
    value = torch.where(visits > 0, stats.normalise(tree.qvalues(node)), torch.zeros_like(visits))
    return value + prior * total.sqrt() / (1 + visits) * exploration


def dirichlet_noise(prior: torch.Tensor, alpha: float, fraction: float,
                    invalid: torch.Tensor) -> torch.Tensor:
    """(1 − ε)·P + ε·Dir(α) over the valid actions of each row (torch's global generator)."""
    if fraction <= 0:
        return prior
    concentration = torch.full_like(prior, alpha)
    noise = torch.distributions.Gamma(concentration, torch.ones_like(prior)).sample().masked_fill(invalid, 0)
    noise = noise / noise.sum(-1, keepdim=True).clamp(min=1e-12)
    return (1 - fraction) * prior + fraction * noise


def visit_action(policy: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """Sample a ∝ N(root, a)^(1/T) (MuZero acting); T = 0 takes the most visited action."""
    if temperature == 0:
        return policy.argmax(-1)
    weights = policy.clamp(min=0) ** (1.0 / temperature)
    return torch.multinomial(weights, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def muzero_search(model: SearchModel, root: State, simulations: int, *, c1: float = 1.25,
                  c2: float = 19652.0, dirichlet_alpha: float = 0.25, dirichlet_fraction: float = 0.25,
                  temperature: float = 1.0, invalid_actions: torch.Tensor | None = None,
                  generator: torch.Generator | None = None) -> SearchResult:
    """MuZero's search from B root latents; see the module docstring. The policy target is the
    root's visit distribution; the action is drawn from it at `temperature`."""
    if simulations < 1:
        raise ValueError(f"simulations must be ≥ 1, got {simulations}")
    tree = new_tree(model, root, simulations, invalid_actions)
    stats = MinMaxStats(tree.batch_size, tree.node_values.device)
    root_prior = dirichlet_noise(torch.softmax(tree.children_logits[:, 0], -1), dirichlet_alpha,
                                 dirichlet_fraction, tree.invalid_actions)

    def select_root(tree: Tree, node: torch.Tensor) -> torch.Tensor:
        scores = puct_scores(tree, node, stats, root_prior, c1, c2)
        return scores.masked_fill(tree.invalid_actions, float("-inf")).argmax(-1)

    def select_interior(tree: Tree, node: torch.Tensor) -> torch.Tensor:
        prior = torch.softmax(tree.children_logits[tree.rows(), node], -1)
        return puct_scores(tree, node, stats, prior, c1, c2).argmax(-1)

    run_search(tree, model, simulations, select_root, select_interior, stats.update)
    policy = tree.root_visit_policy()
    return SearchResult(visit_action(policy, temperature, generator), policy, tree.node_values[:, 0], tree)
