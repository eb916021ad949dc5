"""Dense reference forms of the maths, for tests to compare the sparse and fast paths against."""

import torch

from reverie.nn.maths import twohot_indices


def twohot_encode(target: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """The two-hot target distribution over `bins` as a dense tensor: (...,) → (..., K)."""
    below, above, w_below, w_above = twohot_indices(target, bins)
    probs = torch.zeros(*target.shape, bins.shape[0], dtype=bins.dtype, device=bins.device)
    probs.scatter_add_(-1, below.unsqueeze(-1), w_below.unsqueeze(-1).to(bins.dtype))
    probs.scatter_add_(-1, above.unsqueeze(-1), w_above.unsqueeze(-1).to(bins.dtype))
    return probs
