"""The batched search tree: B trees held in tensors, one node per simulation, and the three steps
every tree search shares — simulate (descend to an unexpanded edge), expand (one model call for
all B trees) and backup (discounted returns up the path).

Layout, for B trees of N = simulations + 1 nodes over A actions (node 0 is the root; node k + 1
is the one simulation k added):

    node_visits, node_values, raw_values      (B, N)      N(s), the mean backed-up value, v̂(s)
    parents, action_from_parent               (B, N)      −1 at the root
    children_index                            (B, N, A)   the child node, −1 while unexpanded
    children_logits                           (B, N, A)   prior logits at s
    children_visits, children_values          (B, N, A)   N(s, a), the child's node value
    children_rewards, children_discounts      (B, N, A)   r(s, a), γ(s, a) from the model
    latents                                   {name: (B, N, ...)}

so Q(s, a) = r(s, a) + γ(s, a)·V(child). The only Python loops are over simulations and over the
depth of one descent or backup (every tree moves one level per iteration, masked where it has
arrived); nothing loops over trees or nodes. This is the array layout of DeepMind's mctx
(`mctx/_src/tree.py`), written for PyTorch; single-agent, no sign flips between plies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from .mppi import State

# Given (tree, node (B,)), an action (B,) to descend along.
SelectFn = Callable[["Tree", torch.Tensor], torch.Tensor]


class SearchModel(Protocol):
    """What a tree search needs from a model of a discrete-action environment (M rows)."""

    def predict(self, latent: State) -> tuple[torch.Tensor, torch.Tensor]:
        """Prior logits (M, A) and value estimate (M,) of each latent state."""

    def step(self, latent: State, action: torch.Tensor) -> tuple[State, torch.Tensor, torch.Tensor]:
        """Taking `action` (M,) (int64): the next latent, the reward (M,) and the discount (M,) —
        γ times the probability the episode continues, or γ for a model without terminations."""


@dataclass
class SearchResult:
    action: torch.Tensor  # (B,) int64: the action to take
    policy: torch.Tensor  # (B, A): the policy target of the search
    value: torch.Tensor  # (B,): the root's backed-up value
    tree: Tree


@dataclass
class Tree:
    node_visits: torch.Tensor
    node_values: torch.Tensor
    raw_values: torch.Tensor
    parents: torch.Tensor
    action_from_parent: torch.Tensor
    children_index: torch.Tensor
    children_logits: torch.Tensor
    children_visits: torch.Tensor
    children_values: torch.Tensor
    children_rewards: torch.Tensor
    children_discounts: torch.Tensor
    latents: State
    invalid_actions: torch.Tensor  # (B, A) bool, masked at the root only

    @property
    def batch_size(self) -> int:
        return self.node_visits.shape[0]

    @property
    def num_actions(self) -> int:
        return self.children_logits.shape[-1]

    def rows(self) -> torch.Tensor:
        return torch.arange(self.batch_size, device=self.node_visits.device)

    def qvalues(self, node: torch.Tensor) -> torch.Tensor:
        """Q(s, a) = r + γ·V(child) of every action at `node` (B,) → (B, A); 0 + γ·0 where unvisited."""
        b = self.rows()
        return self.children_rewards[b, node] + self.children_discounts[b, node] * self.children_values[b, node]

    def root_visit_policy(self) -> torch.Tensor:
        """N(root, a) / Σ_b N(root, b), (B, A): MuZero's policy target."""
        visits = self.children_visits[:, 0]
        return visits / visits.sum(-1, keepdim=True).clamp(min=1)


def new_tree(model: SearchModel, root: State, simulations: int,
             invalid_actions: torch.Tensor | None = None) -> Tree:
    """Allocate B trees of `simulations` + 1 nodes and expand their roots with one model call."""
    logits, value = model.predict(root)  # (B, A), (B,)
    B, A = logits.shape
    N = simulations + 1
    device, dtype = logits.device, logits.dtype

    def zeros(*shape, fill=0.0, kind=dtype):
        return torch.full((B, *shape), fill, dtype=kind, device=device)

    if invalid_actions is None:
        invalid_actions = torch.zeros(B, A, dtype=torch.bool, device=device)
    elif invalid_actions.shape != (B, A) or bool(invalid_actions.all(-1).any()):
        raise ValueError(f"invalid_actions must be (B, A) = ({B}, {A}) bool with a valid action per row")
    tree = Tree(
        node_visits=zeros(N), node_values=zeros(N), raw_values=zeros(N),
        parents=zeros(N, fill=-1, kind=torch.long), action_from_parent=zeros(N, fill=-1, kind=torch.long),
        children_index=zeros(N, A, fill=-1, kind=torch.long), children_logits=zeros(N, A),
        children_visits=zeros(N, A), children_values=zeros(N, A),
        children_rewards=zeros(N, A), children_discounts=zeros(N, A),
        latents={k: v.new_zeros((B, N, *v.shape[1:])) for k, v in root.items()},
        invalid_actions=invalid_actions.to(device),
    )
    root_logits = logits.masked_fill(tree.invalid_actions, torch.finfo(dtype).min)
    write_node(tree, torch.zeros(B, dtype=torch.long, device=device), root, root_logits, value)
    return tree


def write_node(tree: Tree, node: torch.Tensor, latent: State, logits: torch.Tensor, value: torch.Tensor) -> None:
    """Store a freshly expanded node (B,) with one visit and V = v̂."""
    b = tree.rows()
    tree.children_logits[b, node] = logits
    tree.raw_values[b, node] = value
    tree.node_values[b, node] = value
    tree.node_visits[b, node] = 1.0
    for key, tensor in latent.items():
        tree.latents[key][b, node] = tensor


def simulate(tree: Tree, select_root: SelectFn, select_interior: SelectFn) -> tuple[torch.Tensor, torch.Tensor]:
    """Descend from the root (by `select_root`, then `select_interior`) until the chosen edge is
    unexpanded, in every tree at once. Returns the last expanded node (B,) and the action (B,)
    whose child is to be expanded."""
    b = tree.rows()
    node = torch.zeros(tree.batch_size, dtype=torch.long, device=b.device)
    action = select_root(tree, node)
    child = tree.children_index[b, node, action]
    while bool((child >= 0).any()):  # depth ≤ simulations: every descent ends at a new edge
        moving = child >= 0
        node = torch.where(moving, child, node)
        action = torch.where(moving, select_interior(tree, node), action)
        child = torch.where(moving, tree.children_index[b, node, action], child)
    return node, action


def expand(tree: Tree, model: SearchModel, parent: torch.Tensor, action: torch.Tensor, index: int) -> torch.Tensor:
    """One model step from (parent, action) in all B trees; the new node gets number `index`."""
    b = tree.rows()
    latent = {key: tensor[b, parent] for key, tensor in tree.latents.items()}
    next_latent, reward, discount = model.step(latent, action)
    logits, value = model.predict(next_latent)
    node = torch.full_like(parent, index)
    write_node(tree, node, next_latent, logits, value)
    tree.parents[b, node] = parent
    tree.action_from_parent[b, node] = action
    tree.children_index[b, parent, action] = node
    tree.children_rewards[b, parent, action] = reward.to(tree.children_rewards.dtype)
    tree.children_discounts[b, parent, action] = discount.to(tree.children_discounts.dtype)
    return node


def backup(tree: Tree, leaf: torch.Tensor, on_edge: Callable[[torch.Tensor, torch.Tensor], None] | None = None) -> None:
    """Back the leaf's value up to the root: along each edge (p, a) → n, G ← r(p, a) + γ(p, a)·G,
    V(p) ← (N(p)·V(p) + G) / (N(p) + 1), N(p) += 1, N(p, a) += 1 and the edge's child value ← V(n).
    `on_edge(active (B,) bool, q (B,))` sees Q(p, a) = r + γ·V(n) of each edge passed (min-max
    statistics)."""
    b = tree.rows()
    node = leaf
    value = tree.node_values[b, leaf]
    active = tree.parents[b, leaf] >= 0
    while bool(active.any()):
        parent = torch.where(active, tree.parents[b, node], node)
        action = tree.action_from_parent[b, node].clamp(min=0)
        reward, discount = tree.children_rewards[b, parent, action], tree.children_discounts[b, parent, action]
        value = torch.where(active, reward + discount * value, value)
        visits = tree.node_visits[b, parent]
        tree.node_values[b, parent] = torch.where(
            active, (visits * tree.node_values[b, parent] + value) / (visits + 1), tree.node_values[b, parent])
        tree.node_visits[b, parent] = visits + active.to(visits.dtype)
        tree.children_values[b, parent, action] = torch.where(
            active, tree.node_values[b, node], tree.children_values[b, parent, action])
        tree.children_visits[b, parent, action] += active.to(visits.dtype)
        if on_edge is not None:
            on_edge(active, reward + discount * tree.node_values[b, node])
        node = parent
        active = active & (tree.parents[b, node] >= 0)


def run_search(tree: Tree, model: SearchModel, simulations: int, select_root: SelectFn,
               select_interior: SelectFn, on_edge: Callable[[torch.Tensor, torch.Tensor], None] | None = None) -> Tree:
    """`simulations` rounds of simulate → expand → backup (simulation k adds node k + 1)."""
    for k in range(simulations):
        parent, action = simulate(tree, select_root, select_interior)
        leaf = expand(tree, model, parent, action, k + 1)
        backup(tree, leaf, on_edge)
    return tree
