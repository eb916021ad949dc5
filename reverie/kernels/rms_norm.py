"""RMSNorm with a hand-written backward, for CPU training (switch `rms_norm`).

    y = x·r·w,  r = 1/√(mean(x²) + eps) per row

torch's CPU kernel is fused only forwards; its autograd backward runs ~15 elementwise passes,
which dominates an image update (every CNN stage normalises an (N·H·W, C) map). With x̂ = x·r
and u = g·w:
    ∂L/∂w = Σ_rows g·x̂,   ∂L/∂x = r·(u − x̂·mean(u·x̂))
"""

from __future__ import annotations

import torch


class _RMSNorm(torch.autograd.Function):
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


def applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Where the technique pays: CPU tensors on which a gradient will be taken."""
    return x.device.type == "cpu" and torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x / √(mean(x²) + eps) · weight over the last dim, float32, with the hand-written backward."""
    return _RMSNorm.apply(x, weight, eps)
