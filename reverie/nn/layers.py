"""Network layers shared by every agent: Linear, Norm, Dense, MLP, BlockLinear.

Initialisation follows DreamerV3: truncated normal scaled by fan-in (std 1.1368/√fan_in,
truncated at ±2σ), zero biases, and an `outscale` that shrinks (or zeroes) output layers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from reverie.errors import ConfigError


def trunc_normal_fan_in_(weight: torch.Tensor, fan_in: int, scale: float = 1.0) -> None:
    std = 1.1368 * math.sqrt(1.0 / fan_in) * scale
    if scale == 0.0:
        nn.init.zeros_(weight)
    else:
        nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std)


def get_act(name: str) -> nn.Module:
    acts = {"silu": nn.SiLU, "elu": nn.ELU, "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh,
            "none": nn.Identity}
    if name not in acts:
        raise ConfigError(f"unknown activation '{name}'; choose from {', '.join(acts)}")
    return acts[name]()


class Linear(nn.Linear):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, outscale: float = 1.0):
        super().__init__(in_features, out_features, bias)
        trunc_normal_fan_in_(self.weight, in_features, outscale)
        if bias:
            nn.init.zeros_(self.bias)


class RMSNorm(nn.Module):
    """x / √(mean(x²) + eps) · weight over the last dim."""

    def __init__(self, dim: int, eps: float = 1e-4):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


class Norm(nn.Module):
    """RMSNorm or LayerNorm over the last dim (eps 1e-4 as in DreamerV3), or identity.

    Computed in float32 and returned in the input's dtype: under bf16 autocast this keeps the
    statistics exact (as the official code does) and uses the fused float32 kernel instead of the
    slow mixed-dtype path.
    """

    def __init__(self, dim: int, kind: str = "rms", eps: float = 1e-4):
        super().__init__()
        if kind == "rms":
            self.norm = RMSNorm(dim, eps=eps)
        elif kind == "layer":
            self.norm = nn.LayerNorm(dim, eps=eps)
        elif kind == "none":
            self.norm = nn.Identity()
        else:
            raise ConfigError(f"unknown norm '{kind}'; choose rms, layer or none")

    def forward(self, x):
        if x.dtype == torch.float32:
            return self.norm(x)
        return self.norm(x.float()).to(x.dtype)


class Dense(nn.Sequential):
    """Linear → Norm → activation."""

    def __init__(self, in_features: int, out_features: int, norm: str = "rms", act: str = "silu"):
        super().__init__(Linear(in_features, out_features),
                         Norm(out_features, norm), get_act(act))


class MLP(nn.Sequential):
    """`layers` Dense layers of `units` (an empty MLP passes its input through)."""

    def __init__(self, in_features: int, units: int, layers: int, norm="rms", act="silu"):
        dims = [in_features] + [units] * layers
        super().__init__(*[Dense(a, b, norm, act) for a, b in zip(dims[:-1], dims[1:])])
        self.out_features = dims[-1]


class BlockLinear(nn.Module):
    """Block-diagonal linear map with `blocks` groups: (..., G·I) → (..., G·O).

    The weight (G, I, O) is initialised with the fan-in of the whole layer, G·I = `in_features`,
    not the per-block I: the official initialiser computes fans from the 3-D kernel as
    (I·G, O·G) (danijar/dreamerv3 `embodied/jax/nets.py` `Initializer.compute_fans`), so the
    effective std is 1/√in_features. `fan_in="block"` uses the per-block I instead (std √G wider).
    """

    def __init__(self, in_features: int, out_features: int, blocks: int, outscale: float = 1.0,
                 fan_in: str = "layer"):
        super().__init__()
        if in_features % blocks or out_features % blocks:
            raise ConfigError(f"BlockLinear sizes {in_features}→{out_features} not divisible by {blocks} blocks")
        self.blocks = blocks
        self.weight = nn.Parameter(torch.empty(blocks, in_features // blocks, out_features // blocks))
        self.bias = nn.Parameter(torch.zeros(out_features))
        if fan_in not in ("layer", "block"):
            raise ConfigError(f"BlockLinear fan_in {fan_in!r} is not one of layer | block")
        fans = in_features if fan_in == "layer" else in_features // blocks  # layer: G·I, as official
        trunc_normal_fan_in_(self.weight, fans, outscale)

    def forward(self, x):
        return self.apply_params(x, self.weight, self.bias)

    @staticmethod
    def apply_params(x, weight, bias):
        """(..., G·I) with weight (G, I, O) and bias (G·O) → (..., G·O)."""
        lead, blocks = x.shape[:-1], weight.shape[0]
        x = x.reshape(-1, blocks, x.shape[-1] // blocks).transpose(0, 1)  # (G, N, I)
        x = torch.bmm(x, weight.to(x.dtype)).transpose(0, 1)  # (N, G, O)
        return x.reshape(*lead, -1) + bias.to(x.dtype)
