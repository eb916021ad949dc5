"""The two-hot cross-entropy with a hand-written backward (switch `twohot_loss`).

Cross-entropy of softmax(x) against a sparse target Σ_j w_j·e_{i_j}:

    L = −Σ_j w_j·ln softmax(x)_{i_j} = Σ_j w_j·(lse(x) − x_{i_j})
    ∂L/∂x = W·softmax(x) − Σ_j w_j·e_{i_j},  W = Σ_j w_j

(Each lse(x) − x_i ≥ 0 is formed before weighting: W·lse − Σ_j w_j·x_{i_j} would cancel
catastrophically for huge logits when the weights' sum rounds away from 1.) Autograd through
log_softmax and gather zero-fills and scatters one (N, K) gradient per gather and adds them up
(5 passes over (N, K) per two-hot target); this backward writes one tensor.
"""

from __future__ import annotations

import torch


class _SparseCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, index, weight):  # (…, K) float, (…, J) int64, (…, J) float
        lse = torch.logsumexp(logits, -1)  # (…)
        total = weight.sum(-1)  # (…) W
        ctx.save_for_backward(logits, lse, index, weight, total)
        return (weight * (lse.unsqueeze(-1) - logits.gather(-1, index))).sum(-1)

    @staticmethod
    def backward(ctx, grad):
        logits, lse, index, weight, total = ctx.saved_tensors
        grad_logits = torch.exp(logits - lse.unsqueeze(-1)).mul_((grad * total).unsqueeze(-1))
        grad_logits.scatter_add_(-1, index, -(grad.unsqueeze(-1) * weight))
        return grad_logits, None, None


def sparse_cross_entropy(logits: torch.Tensor, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """−Σ_j w_j·ln softmax(logits)_{i_j}: logits (…, K), index (…, J) int64, weight (…, J) → (…)."""
    return _SparseCrossEntropy.apply(logits, index, weight)
