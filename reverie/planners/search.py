"""One entry to the two tree searches, as agents configure them: `kind` muzero (pUCT with Dirichlet
root noise, reverie/planners/puct.py) or gumbel (Gumbel MuZero, reverie/planners/gumbel.py).

`explore` is acting in training: root noise and an action drawn from the visit counts (muzero) or
Gumbel samples (gumbel); without it the search is deterministic up to the model's own sampling and
takes the most visited action (muzero) or the best considered one (gumbel).
"""

from __future__ import annotations

from .gumbel import gumbel_search
from .puct import muzero_search
from .tree import SearchModel, SearchResult, State

KINDS = ("muzero", "gumbel")


def tree_search(kind: str, model: SearchModel, root: State, simulations: int, explore: bool, *,
                max_considered: int = 16, c1: float = 1.25, c2: float = 19652.0, dirichlet_alpha: float = 0.3,
                dirichlet_fraction: float = 0.25, temperature: float = 1.0) -> SearchResult:
    if kind == "gumbel":
        return gumbel_search(model, root, simulations, max_considered=max_considered,
                             gumbel_scale=1.0 if explore else 0.0)
    if kind == "muzero":
        return muzero_search(model, root, simulations, c1=c1, c2=c2, dirichlet_alpha=dirichlet_alpha,
                             dirichlet_fraction=dirichlet_fraction if explore else 0.0,
                             temperature=temperature if explore else 0.0)
    raise ValueError(f"unknown tree search '{kind}'; choose from {', '.join(KINDS)}")
