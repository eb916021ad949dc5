"""MuZero's three functions (Schrittwieser et al. 2020, §3) and EfficientZero's projection heads
(Ye et al. 2021, §4.1), over one vector latent:

    s⁰ = h(o_t)                      representation: an MLP on the vector keys and/or a residual
                                     CNN on the image keys, then a linear layer to the latent
    s^{k+1}, r^{k+1} = g(s^k, a)     dynamics: s^k + MLP([s^k, onehot(a)]) (a residual step, as
                                     LightZero's `res_connection_in_dynamics`); reward logits, or
                                     with `value_prefix` (EfficientZero) logits of the reward summed
                                     since the unroll's start, from an LSTM over s^1 … s^{k+1}
    p^k, v^k = f(s^k)                prediction: policy logits over the A actions, value logits

Value and reward are two-hot distributions over bins in symlog space (`TwoHot(symlog=True)`).
With `latent_norm: minmax` every latent is scaled to [0, 1] per row, s ← (s − min s)/(max s − min s),
as MuZero's Appendix G does for the hidden state; the output layers of the value, reward and
policy heads start at zero (a uniform prior, value and reward 0). `Projection` is EfficientZero's
SimSiam pair: a projector (both branches) and a predictor (online branch only).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reverie.nn.distributions import TwoHot
from reverie.nn.layers import MLP, Linear, Norm

_EPS = 1e-5


def minmax_scale(s: torch.Tensor) -> torch.Tensor:
    """(…, D) → (…, D) in [0, 1] per row (MuZero Appendix G)."""
    low, high = s.amin(-1, keepdim=True), s.amax(-1, keepdim=True)
    return (s - low) / (high - low + _EPS)


class ResidualBlock(nn.Module):
    """x + conv(norm-act(conv(norm-act(x)))) on NCHW maps, 3 × 3 kernels (MuZero's residual block,
    pre-activation, with a one-group GroupNorm — per-sample statistics — instead of batch norm)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm1, self.norm2 = nn.GroupNorm(1, channels), nn.GroupNorm(1, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.relu(self.norm1(x)))
        return x + self.conv2(F.relu(self.norm2(y)))


class ResidualCNN(nn.Module):
    """MuZero's Atari downsampling, smaller: conv/2 → res → conv/2 → res → pool/2 → res → pool/2,
    so 64 × 64 images end 4 × 4 and 96 × 96 ones 6 × 6; (N, H, W, C) uint8 → (N, features)."""

    def __init__(self, image_shape: tuple[int, int, int], depth: int = 32):
        super().__init__()
        h, w, c = image_shape
        if h % 16 or w % 16:
            raise ValueError(f"the residual CNN halves images 4 times: height and width must divide by 16, got {h}×{w}")
        self.net = nn.Sequential(
            nn.Conv2d(c, depth, 3, stride=2, padding=1), ResidualBlock(depth),
            nn.Conv2d(depth, 2 * depth, 3, stride=2, padding=1), ResidualBlock(2 * depth),
            nn.AvgPool2d(2), ResidualBlock(2 * depth), nn.AvgPool2d(2), nn.ReLU())
        self.features = 2 * depth * (h // 16) * (w // 16)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2).float() / 255.0 - 0.5  # (N, C, H, W) in [−0.5, 0.5]
        return self.net(x).flatten(1)


class Representation(nn.Module):
    """h: observations {key: (N, ...)} → latent (N, L). Image keys of one size are stacked on channels."""

    def __init__(self, obs_space: dict, latent_dim: int, units: int, layers: int, cnn_depth: int):
        super().__init__()
        self.image_keys = sorted(k for k, s in obs_space.items() if len(s.shape) == 3)
        self.vector_keys = sorted(k for k, s in obs_space.items() if len(s.shape) != 3)
        features = 0
        if self.image_keys:
            shapes = {tuple(obs_space[k].shape[:2]) for k in self.image_keys}
            if len(shapes) > 1:
                raise ValueError(f"image keys {self.image_keys} differ in size {sorted(shapes)}: the residual CNN "
                                 "stacks them on channels")
            h, w = shapes.pop()
            channels = sum(obs_space[k].shape[2] for k in self.image_keys)
            self.cnn = ResidualCNN((h, w, channels), cnn_depth)
            features += self.cnn.features
        if self.vector_keys:
            vector_dim = sum(int(np.prod(obs_space[k].shape)) for k in self.vector_keys)
            self.mlp = MLP(vector_dim, units, layers, norm="layer", act="relu")
            features += self.mlp.out_features
        self.out = Linear(features, latent_dim)

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = []
        if self.image_keys:
            parts.append(self.cnn(torch.cat([obs[k] for k in self.image_keys], -1)))
        if self.vector_keys:
            lead = obs[self.vector_keys[0]].shape[0]
            parts.append(self.mlp(torch.cat([obs[k].reshape(lead, -1).float() for k in self.vector_keys], -1)))
        return self.out(torch.cat(parts, -1))


class MuZeroNetwork(nn.Module):
    """h, g and f of the module docstring; `cfg` is the `muzero` config section."""

    def __init__(self, obs_space: dict, num_actions: int, cfg):
        super().__init__()
        L, U, n = cfg.latent_dim, cfg.mlp_dim, cfg.mlp_layers
        self.num_actions, self.minmax = num_actions, cfg.latent_norm == "minmax"
        self.representation_net = Representation(obs_space, L, U, n, cfg.cnn_depth)
        trunk = MLP(L + num_actions, U, n, norm="layer", act="relu")
        self.dynamics_net = nn.Sequential(trunk, Linear(trunk.out_features, L))
        # value prefix (EfficientZero): an LSTM over the unrolled latents predicts the reward summed since the last reset
        self.prefix_cell = nn.LSTMCell(L, cfg.lstm_dim) if cfg.value_prefix else None
        reward_in = cfg.lstm_dim if cfg.value_prefix else L
        self.reward_net = nn.Sequential(MLP(reward_in, U, 1, norm="layer", act="relu"),
                                        Linear(U, cfg.num_bins, outscale=0.0))
        self.prediction_trunk = MLP(L, U, n, norm="layer", act="relu")
        width = self.prediction_trunk.out_features
        self.policy_head = Linear(width, num_actions, outscale=0.0)
        self.value_head = Linear(width, cfg.num_bins, outscale=0.0)
        self.register_buffer("bins", torch.linspace(cfg.vmin, cfg.vmax, cfg.num_bins), persistent=False)

    def _norm(self, s: torch.Tensor) -> torch.Tensor:
        return minmax_scale(s) if self.minmax else s

    def represent(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._norm(self.representation_net(obs))  # (N, L)

    def dynamics(self, s: torch.Tensor, action: torch.Tensor, carry: tuple[torch.Tensor, torch.Tensor] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """s (N, L), action (N,) int64 → next latent (N, L), reward logits (N, bins) and the value
        prefix's LSTM carry (h, c) (N, lstm_dim) each (None without `value_prefix`; None in: zeros).
        The logits are of that step's reward, or with `value_prefix` of the rewards summed since the
        carry was last reset."""
        x = torch.cat([s, F.one_hot(action, self.num_actions).to(s.dtype)], -1)
        nxt = self._norm(s + self.dynamics_net(x))
        if self.prefix_cell is None:
            return nxt, self.reward_net(nxt), None
        carry = self.prefix_cell(nxt, carry)
        return nxt, self.reward_net(carry[0]), carry

    def predict(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """s (N, L) → policy logits (N, A), value logits (N, bins)."""
        x = self.prediction_trunk(s)
        return self.policy_head(x), self.value_head(x)

    def twohot(self, logits: torch.Tensor) -> TwoHot:
        return TwoHot(logits, self.bins, symlog=True)


class Projection(nn.Module):
    """EfficientZero's self-supervised consistency heads: projector L → P → P (both branches) and
    predictor P → P/2 → P (the online branch only); the loss is −cos(predictor(projector(ŝ)),
    sg(projector(h(o))))."""

    def __init__(self, latent_dim: int, dim: int):
        super().__init__()
        self.projector = nn.Sequential(Linear(latent_dim, dim), Norm(dim, "layer"), nn.ReLU(), Linear(dim, dim),
                                       Norm(dim, "layer"))
        self.predictor = nn.Sequential(Linear(dim, dim // 2), Norm(dim // 2, "layer"), nn.ReLU(), Linear(dim // 2, dim))

    def online(self, s: torch.Tensor) -> torch.Tensor:
        return self.predictor(self.projector(s))

    def target(self, s: torch.Tensor) -> torch.Tensor:
        return self.projector(s).detach()


def consistency_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """−cos(predicted, target) over the last axis (target already stop-gradient): (…, P) → (…,)."""
    return -F.cosine_similarity(predicted, target, dim=-1, eps=_EPS)
