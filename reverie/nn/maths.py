"""The maths of world-model RL (DreamerV3, DESIGN §4), free of any module state but the normaliser.

symlog/symexp, two-hot encoding over exponentially spaced bins, λ-returns, and the percentile
return normaliser. Everything is written for tensors with arbitrary leading batch dimensions and
without host synchronisation, so it can sit inside a compiled training update.
"""

from __future__ import annotations

import torch
from torch import nn

from reverie import distributed
from reverie.kernels.compile import compiled


def symlog(x: torch.Tensor) -> torch.Tensor:
    """symlog(x) = sign(x)·ln(1 + |x|)."""
    return torch.sign(x) * torch.log1p(torch.abs(x))


def symexp(x: torch.Tensor) -> torch.Tensor:
    """symexp(x) = sign(x)·(exp(|x|) − 1), the inverse of symlog."""
    return torch.sign(x) * torch.expm1(torch.abs(x))


def symexp_bins(num_bins: int = 255, limit: float = 20.0) -> torch.Tensor:
    """Bins symexp(linspace(−limit, limit, n)), built from one half and mirrored so that they are
    exactly symmetric around zero (a prediction from uniform probabilities is then exactly 0)."""
    if num_bins % 2 == 1:
        half = symexp(torch.linspace(-limit, 0.0, (num_bins - 1) // 2 + 1, dtype=torch.float64))
        bins = torch.cat([half, -half[:-1].flip(0)])
    else:
        half = symexp(torch.linspace(-limit, 0.0, num_bins // 2, dtype=torch.float64))
        bins = torch.cat([half, -half.flip(0)])
    return bins.float()


def twohot_indices(target: torch.Tensor, bins: torch.Tensor):
    """Neighbouring bin indices and weights of the two-hot encoding of `target`.

    For b_k ≤ y < b_{k+1}: w_k = |b_{k+1} − y| / |b_{k+1} − b_k| and w_{k+1} = |b_k − y| / |b_{k+1} − b_k|.
    Targets outside the bins put all weight on the nearest end bin.
    Returns (below, above, weight_below, weight_above), each shaped like `target`.
    """
    num = bins.shape[0]
    count_le = torch.searchsorted(bins, target.contiguous(), right=True)  # number of bins ≤ y
    below = (count_le - 1).clamp(0, num - 1)
    above = count_le.clamp(0, num - 1)
    equal = below == above
    dist_below = torch.where(equal, 1.0, (bins[below] - target).abs())
    dist_above = torch.where(equal, 1.0, (bins[above] - target).abs())
    total = dist_below + dist_above
    return below, above, dist_above / total, dist_below / total


@compiled
def twohot_cross_entropy(logits: torch.Tensor, targets, bins: torch.Tensor, scales) -> torch.Tensor:
    """Σ_i scale_i·CE(twohot(target_i), softmax(logits)) per row: logits (…, K), each target (…,) → (…).
    Several targets of the same logits (the critic's return and slow-critic targets) share one pass."""
    index, weight = [], []
    for target, scale in zip(targets, scales):
        below, above, w_below, w_above = twohot_indices(target, bins)
        index += [below, above]
        weight += [scale * w_below, scale * w_above]
    logits, index, weight = logits.float(), torch.stack(index, -1), torch.stack(weight, -1).float()  # (…, K), (…, 2n) ×2
    return -(weight * torch.log_softmax(logits, -1).gather(-1, index)).sum(-1)


@compiled
def image_squared_error(pred: torch.Tensor, target: torch.Tensor, scale: float) -> torch.Tensor:
    """scale·Σ_{H,W,C} (pred − target/255)² per image: pred (…, H, W, C) in [0, 1], target uint8 (or
    float in [0, 255]) → (…)."""
    return scale * (pred.float() - target.float() / 255.0).square().sum((-3, -2, -1))


def twohot_mean(probs: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Σ_k p_k·b_k for bins symmetric around zero (b_{K−1−k} = −b_k, as `symexp_bins` builds them),
    computed as Σ_{k in upper half} (p_k − p_{K−1−k})·b_k: one subtraction and a matrix-vector
    product instead of K products and a sum, and symmetric probabilities give exactly 0."""
    num = bins.shape[-1]
    half = num // 2
    upper = probs[..., num - half:]  # (..., K/2): bins above zero
    lower = probs[..., :half].flip(-1)  # their mirror images below zero
    return (upper - lower) @ bins[num - half:].to(probs.dtype)


@compiled
def twohot_logits_mean(logits: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Σ_k softmax(logits)_k·b_k in float32 (`twohot_mean` of the softmax)."""
    return twohot_mean(torch.softmax(logits.float(), -1), bins)


def lambda_return(reward: torch.Tensor, discount: torch.Tensor, lam: torch.Tensor | float,
                  bootstrap: torch.Tensor) -> torch.Tensor:
    """λ-returns over a sequence of length L (time on dim 1), giving L − 1 returns.

        R_t = r_{t+1} + d_{t+1}·((1 − λ_{t+1})·v_{t+1} + λ_{t+1}·R_{t+1}),   R_{L−1} = v_{L−1}

    with d the discount (γ·(1 − terminal), or γ times the predicted continue probability), λ the
    mixing weight (λ·(1 − last) cuts the return where an episode ends) and v the bootstrap values.
    For imagination this is R^λ_t = r_{t+1} + γc_{t+1}((1 − λ)v(s_{t+1}) + λR^λ_{t+1}) (DESIGN §4).
    reward, discount, bootstrap (N, L); lam (N, L) or a float; returns (N, L − 1).
    """
    lam = torch.as_tensor(lam, dtype=reward.dtype, device=reward.device).expand_as(reward)
    interm = reward[:, 1:] + discount[:, 1:] * (1 - lam[:, 1:]) * bootstrap[:, 1:]  # (N, L-1)
    factor = discount[:, 1:] * lam[:, 1:]  # (N, L-1)
    ret = bootstrap[:, -1]
    returns = []
    for t in reversed(range(reward.shape[1] - 1)):
        ret = interm[:, t] + factor[:, t] * ret
        returns.append(ret)
    return torch.stack(returns[::-1], 1)


class ReturnNormalizer(nn.Module):
    """Percentile return scale S = EMA(P_hi(R) − P_lo(R)); the advantage divides by max(limit, S).

    EMA with rate 0.01 (decay 0.99) of the 5th and 95th percentiles, without debiasing, starting
    at zero, as the official code does.
    """

    def __init__(self, rate: float = 0.01, limit: float = 1.0, lo: float = 5.0, hi: float = 95.0):
        super().__init__()
        self.rate, self.limit = rate, limit
        self.register_buffer("quantiles", torch.tensor([lo / 100.0, hi / 100.0]))
        self.register_buffer("low", torch.zeros(()))
        self.register_buffer("high", torch.zeros(()))

    @torch.no_grad()
    def update(self, returns: torch.Tensor) -> None:
        values = distributed.gather_rows(returns.detach().float().flatten())  # every rank's returns
        low, high = torch.quantile(values, self.quantiles.to(values.device))
        self.low.lerp_(low, self.rate)
        self.high.lerp_(high, self.rate)

    def stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(offset, scale) with scale ≥ limit."""
        return self.low, torch.clamp(self.high - self.low, min=self.limit)

