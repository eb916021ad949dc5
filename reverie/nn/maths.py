"""Numerical building blocks of DreamerV3 (DESIGN §4), free of any module state but the normaliser.

symlog/symexp, two-hot encoding over exponentially spaced bins, λ-returns, and the percentile
return normaliser. Everything is written for tensors with arbitrary leading batch dimensions and
without host synchronisation, so it can sit inside a compiled training update.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


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


class _RMSNormCPU(torch.autograd.Function):
    """RMS normalisation over the last dim with a hand-written backward.

    y = x·r·w with r = 1/√(mean(x²) + eps) per row. torch's CPU kernel is fused only forwards; its
    autograd backward runs ~15 elementwise passes, which dominates an image update (every CNN
    stage normalises a (N·H·W, C) map). With x̂ = x·r and u = g·w:
        ∂L/∂w = Σ_rows g·x̂,   ∂L/∂x = r·(u − x̂·mean(u·x̂))
    """

    @staticmethod
    def forward(ctx, x, weight, eps):
        y, rstd = torch.ops.aten._fused_rms_norm(x, [x.shape[-1]], weight, eps)
        ctx.save_for_backward(x, rstd, weight)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, rstd, weight = ctx.saved_tensors
        normed = x * rstd  # x̂
        u = grad * weight
        grad_x = rstd * (u - normed * (u * normed).mean(-1, keepdim=True))
        grad_w = (grad * normed).reshape(-1, x.shape[-1]).sum(0)
        return grad_x, grad_w, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dim: x / √(mean(x²) + eps) · weight (float32 in, float32 out)."""
    if x.device.type == "cpu" and torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return _RMSNormCPU.apply(x, weight, eps)
    return torch.nn.functional.rms_norm(x, (x.shape[-1],), weight, eps)


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype that autocast computes matmuls in on x's device, or x's own dtype without autocast.
    Casting a tensor that several layers read to it once saves each layer its own cast."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


FEW_ROWS = 64  # below this many rows a CPU step leaves bf16 autocast for float32


def float32_for_few_rows(rows: int, device: torch.device):
    """A context that turns CPU autocast off for work on fewer than FEW_ROWS rows, else a no-op.

    The posterior loop steps over only B rows (16 in a 16 × 64 batch) and acting over N envs: at
    such sizes a bf16 matmul is no faster than a float32 one, and every step would cast the weights
    and activations again. Measured here (XS dimensions, 64 posterior steps of 16 rows, forward +
    backward, compiled, 2 threads, AMX): 343–371 ms in bf16, 253–287 ms in float32. Inputs computed
    in bf16 outside (the posterior's token projection over all B·T rows) are promoted by the first
    float32 operation that reads them."""
    if device.type == "cpu" and rows < FEW_ROWS and torch.is_autocast_enabled("cpu"):
        return torch.autocast("cpu", enabled=False)
    return contextlib.nullcontext()


SMALL_SOFTMAX = 16  # below this many classes the softmax runs over a transposed view on CPU


def softmax(x: torch.Tensor, log: bool = False) -> torch.Tensor:
    """softmax (or log-softmax) over the last dim.

    torch's CPU kernel along the last dim vectorises over the classes, so for a handful of
    them (the RSSM's 4-class latents, most action sets) it is ~10× slower than the same
    reduction along an outer dim, where it vectorises over the rows: (1024, 32, 4) took 2.7 ms
    forward and 4.0 ms with its backward, against 0.2 and 0.5 ms on the transposed view (one
    thread here). From 16 classes up the direct kernel is faster; GPUs keep it too.
    """
    fn = torch.log_softmax if log else torch.softmax
    if x.device.type == "cpu" and x.shape[-1] < SMALL_SOFTMAX and x.dim() >= 2:
        return fn(x.transpose(-1, -2), -2).transpose(-1, -2)
    return fn(x, -1)


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


class _TwoHotCrossEntropy(torch.autograd.Function):
    """Cross-entropy of softmax(x) against a sparse target Σ_j w_j·e_{i_j}, with a hand-written backward.

        L = −Σ_j w_j·ln softmax(x)_{i_j} = Σ_j w_j·(lse(x) − x_{i_j})
        ∂L/∂x = W·softmax(x) − Σ_j w_j·e_{i_j},  W = Σ_j w_j

    (Each lse(x) − x_i ≥ 0 is formed before weighting: W·lse − Σ_j w_j·x_{i_j} would cancel
    catastrophically for huge logits when the weights' sum rounds away from 1.)

    Autograd through log_softmax and gather zero-fills and scatters one (N, K) gradient per gather
    and adds them up (5 passes over (N, K) per two-hot target); this backward writes one tensor.
    """

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


def twohot_cross_entropy(logits: torch.Tensor, targets, bins: torch.Tensor, scales) -> torch.Tensor:
    """Σ_i scale_i·CE(twohot(target_i), softmax(logits)) per row: logits (…, K), each target (…,) → (…).
    Several targets of the same logits (the critic's return and slow-critic targets) share one pass."""
    index, weight = [], []
    for target, scale in zip(targets, scales):
        below, above, w_below, w_above = twohot_indices(target, bins)
        index += [below, above]
        weight += [scale * w_below, scale * w_above]
    return _TwoHotCrossEntropy.apply(logits.float(), torch.stack(index, -1), torch.stack(weight, -1).float())


def image_squared_error(pred: torch.Tensor, target: torch.Tensor, scale: float) -> torch.Tensor:
    """scale·Σ_{H,W,C} (pred − target/255)² per image: pred (…, H, W, C) in [0, 1], target uint8 (or
    float in [0, 255]) → (…). One function so that a compiled copy fuses the casts, the error and
    its gradient into one pass each over the images."""
    return scale * (pred.float() - target.float() / 255.0).square().sum((-3, -2, -1))


def twohot_encode(target: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Two-hot target distribution over `bins`: (...,) → (..., K)."""
    below, above, w_below, w_above = twohot_indices(target, bins)
    probs = torch.zeros(*target.shape, bins.shape[0], dtype=bins.dtype, device=bins.device)
    probs.scatter_add_(-1, below.unsqueeze(-1), w_below.unsqueeze(-1).to(bins.dtype))
    probs.scatter_add_(-1, above.unsqueeze(-1), w_above.unsqueeze(-1).to(bins.dtype))
    return probs


def twohot_mean(probs: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Σ_k p_k·b_k for bins symmetric around zero (b_{K−1−k} = −b_k, as `symexp_bins` builds them),
    computed as Σ_{k in upper half} (p_k − p_{K−1−k})·b_k: one subtraction and a matrix-vector
    product instead of K products and a sum, and symmetric probabilities give exactly 0."""
    num = bins.shape[-1]
    half = num // 2
    upper = probs[..., num - half:]  # (..., K/2): bins above zero
    lower = probs[..., :half].flip(-1)  # their mirror images below zero
    return (upper - lower) @ bins[num - half:].to(probs.dtype)


def twohot_logits_mean(logits: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Σ_k softmax(logits)_k·b_k in float32 (`twohot_mean` of the softmax); the value and reward
    heads compile it (`run.compile`) so that the softmax, the mirror subtraction and the cast fuse."""
    return twohot_mean(torch.softmax(logits.float(), -1), bins)


def lambda_return(
    reward: torch.Tensor, live: torch.Tensor, cont: torch.Tensor, boot: torch.Tensor
) -> torch.Tensor:
    """λ-returns over a sequence of length L (time on dim 1), giving L − 1 returns.

    R_t = r_{t+1} + live_{t+1}·((1 − cont_{t+1})·boot_{t+1} + cont_{t+1}·R_{t+1}),  R_{L−1} = boot_{L−1}

    with live = γ·(1 − terminal) (or the predicted continue probability) and cont = λ·(1 − last).
    For imagination this is R^λ_t = r_{t+1} + γc_{t+1}((1 − λ)v(s_{t+1}) + λR^λ_{t+1}) (DESIGN §4).
    All inputs (N, L); returns (N, L − 1).
    """
    interm = reward[:, 1:] + live[:, 1:] * (1 - cont[:, 1:]) * boot[:, 1:]  # (N, L-1)
    factor = live[:, 1:] * cont[:, 1:]  # (N, L-1)
    ret = boot[:, -1]
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
        values = returns.detach().float().flatten()
        low, high = torch.quantile(values, self.quantiles.to(values.device))
        self.low.lerp_(low, self.rate)
        self.high.lerp_(high, self.rate)

    def stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(offset, scale) with scale ≥ limit."""
        return self.low, torch.clamp(self.high - self.low, min=self.limit)

