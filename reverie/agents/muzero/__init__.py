"""The MuZero family: a learnt model searched by a batched tree search (Schrittwieser et al. 2020),
with EfficientZero's consistency loss (Ye et al. 2021)."""

from reverie.agents.muzero.agent import MuZeroAgent

__all__ = ["MuZeroAgent"]
