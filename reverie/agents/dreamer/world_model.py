"""The world model: encoder, RSSM, decoder, reward and continue heads, and its loss (DESIGN §4).

    L = L_pred + β_dyn·max(1, KL[sg(q) ‖ p]) + β_rep·max(1, KL[q ‖ sg(p)])
    L_pred = −ln p(x|s) − ln p(r|s) − ln p(c|s)

The likelihoods are configuration: squared errors (DreamerV3) or unit-variance Normals (V1/V2) for
observations (`model.decoder.dist`), two-hot over symexp bins (current), over symlog-space bins
(2023) or a Normal (V1/V2) for the reward (`model.reward.dist`); KL balancing between V2's
α = 0.8 and V3's β_dyn/β_rep is the pair `loss_scales.dyn` / `loss_scales.rep`.

Observation keys are routed by type: 3-D uint8 arrays (H, W, C) go to the CNN, everything else is
flattened and goes to the MLP; regexes in the config select which keys take part. Among the MLP
keys, a categorical one (`ArraySpec.classes`: Discrete and MultiDiscrete observations, stored as
concatenated one-hots) enters the encoder as its one-hot and is decoded by one softmax per class
block with a cross-entropy loss, −Σ_blocks ln p(observed class), as the official DreamerV3 code
does for integer observations; the other vector keys are symlog-squashed (`model.encoder.symlog`)
and decoded with the squared error in symlog space.
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch
from torch import nn

from reverie.agents.dreamer.rssm import RSSM
from reverie.config import Config, DecoderConfig, EncoderConfig
from reverie.errors import ConfigError
from reverie.kernels.compile import compiled
from reverie.kernels.precision import compute_dtype
from reverie.nn import maths as ops
from reverie.nn.conv import ConvDecoder, ConvEncoder
from reverie.nn.distributions import Bernoulli, ImageMSE, MultiOneHot, SymlogMSE, TwoHot
from reverie.nn.layers import MLP, Linear


def is_image(spec) -> bool:
    """3-D uint8 arrays (H, W, C) are images; everything else is a vector."""
    return len(spec.shape) == 3 and np.dtype(spec.dtype) == np.uint8


def classes_of(spec) -> tuple[int, ...]:
    """The one-hot block sizes of a categorical key; () for any other key (and specs without the field)."""
    return tuple(getattr(spec, "classes", ()) or ())


def split_keys(obs_space: dict, mlp_regex: str, cnn_regex: str, where: str):
    """Sorted (mlp_keys, cnn_keys) of an observation space; raise if nothing is selected."""
    mlp = sorted(k for k, s in obs_space.items() if not is_image(s) and re.search(mlp_regex, k))
    cnn = sorted(k for k, s in obs_space.items() if is_image(s) and re.search(cnn_regex, k))
    if not mlp and not cnn:
        raise ConfigError(
            f"no observation key matches model.{where}.mlp_keys={mlp_regex!r} or cnn_keys={cnn_regex!r}; "
            f"the observation keys are {sorted(obs_space)}"
        )
    if cnn and len({tuple(obs_space[k].shape[:2]) for k in cnn}) > 1:
        raise ConfigError(f"image keys {cnn} differ in height/width; resize them to one size")
    return mlp, cnn


class MultiEncoder(nn.Module):
    """Observation dict (N, ...) → tokens (N, E): MLP over the vector keys ⊕ CNN over images. The
    MLP's input concatenates the keys in sorted order: a categorical key as its one-hot, the others
    symlog-squashed (when `symlog`)."""

    def __init__(self, obs_space: dict, cfg: EncoderConfig, norm="rms", act="silu"):
        super().__init__()
        self.mlp_keys, self.cnn_keys = split_keys(obs_space, cfg.mlp_keys, cfg.cnn_keys, "encoder")
        self.symlog = cfg.symlog
        self.categorical = {k for k in self.mlp_keys if classes_of(obs_space[k])}
        self.out_features = 0
        if self.mlp_keys:
            vec_dim = sum(math.prod(obs_space[k].shape) for k in self.mlp_keys)
            self.mlp = MLP(vec_dim, cfg.units, cfg.layers, norm, act)
            self.out_features += self.mlp.out_features
        if self.cnn_keys:
            h, w, _ = obs_space[self.cnn_keys[0]].shape
            channels = sum(obs_space[k].shape[-1] for k in self.cnn_keys)
            self.cnn = ConvEncoder((h, w, channels), cfg.depth, cfg.mults, cfg.kernel, norm, act, cfg.resize)
            self.out_features += self.cnn.out_features

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        outs = []
        if self.mlp_keys:
            outs.append(self.mlp(self.vector_input(obs)))
        if self.cnn_keys:
            outs.append(self.cnn(torch.cat([obs[k] for k in self.cnn_keys], -1)))
        return torch.cat(outs, -1)

    def vector_input(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The MLP's input (N, Σ sizes): one-hots of the categorical keys as they are, the other keys
        symlog-squashed when `symlog`, concatenated in `mlp_keys` order."""
        parts = [obs[k].flatten(1).float() for k in self.mlp_keys]
        squash = [self.symlog and k not in self.categorical for k in self.mlp_keys]
        return torch.cat([ops.symlog(x) if s else x for x, s in zip(parts, squash)], -1)


class MultiDecoder(nn.Module):
    """Latent state → one distribution per observation key: one softmax per class block
    (`MultiOneHot`, cross-entropy) for a categorical key, symlog MSE for the other vector keys,
    image MSE for images. The vector keys share one output layer whose width is the sum of their
    sizes (a categorical key's logits take its one-hot's width)."""

    def __init__(self, obs_space: dict, cfg: DecoderConfig, deter: int, stoch: int, norm="rms", act="silu"):
        super().__init__()
        self.mlp_keys, self.cnn_keys = split_keys(obs_space, cfg.mlp_keys, cfg.cnn_keys, "decoder")
        self.shapes = {k: tuple(obs_space[k].shape) for k in self.mlp_keys + self.cnn_keys}
        self.classes = {k: classes_of(obs_space[k]) for k in self.mlp_keys if classes_of(obs_space[k])}
        self.symlog = cfg.symlog
        self.scale = 0.5 if cfg.dist == "normal" else 1.0  # unit Normal NLL = ½·squared error + const
        if self.mlp_keys:
            self.mlp = MLP(deter + stoch, cfg.units, cfg.layers, norm, act)
            self.vec_out = Linear(self.mlp.out_features, sum(math.prod(self.shapes[k]) for k in self.mlp_keys))
        if self.cnn_keys:
            h, w, _ = self.shapes[self.cnn_keys[0]]
            channels = sum(self.shapes[k][-1] for k in self.cnn_keys)
            self.cnn = ConvDecoder(deter, stoch, (h, w, channels), cfg.depth, cfg.mults, cfg.kernel,
                                   cfg.units, cfg.block_space, norm, act, cfg.resize,
                                   output="sigmoid" if cfg.dist == "mse" else "offset")

    def forward(self, deter: torch.Tensor, stoch: torch.Tensor) -> dict:
        """deter (N, D), stoch (N, S·K) → {key: distribution over (N, *shape)}."""
        dists = {}
        if self.mlp_keys:
            flat = self.vec_out(self.mlp(torch.cat([deter, stoch], -1)))
            sizes = [math.prod(self.shapes[k]) for k in self.mlp_keys]
            for key, part in zip(self.mlp_keys, flat.split(sizes, -1)):
                if key in self.classes:  # logits (N, Σ classes); loss −Σ_blocks ln softmax(block)[class]
                    dists[key] = MultiOneHot(part, self.classes[key])
                    continue
                shape = self.shapes[key]
                dists[key] = SymlogMSE(part.reshape(-1, *shape), len(shape), self.symlog, self.scale)
        if self.cnn_keys:
            images = self.cnn(deter, stoch)  # (N, H, W, C_total)
            sizes = [self.shapes[k][-1] for k in self.cnn_keys]
            for key, part in zip(self.cnn_keys, images.split(sizes, -1)):
                dists[key] = ImageMSE(part, self.scale)
        return dists

    def mode(self, key: str, dist) -> torch.Tensor:
        """The decoded value of `key` from its distribution (what reports show): for a categorical
        key the exact one-hot of each block's most likely class (no straight-through term), else the mode."""
        if key not in self.classes:
            return dist.mode()
        blocks = []
        for part in dist.parts:
            classes = torch.arange(part.probs.shape[-1], device=part.probs.device)
            blocks.append((part.probs.argmax(-1, keepdim=True) == classes).float())
        return torch.cat(blocks, -1)


class ScalarHead(nn.Module):
    """MLP → a distribution over one scalar: `kind` twohot (symexp bins), twohot_symlog (bins
    linspace(−20, 20) in symlog space, 2023), mse (Normal(μ, 1), V1/V2) for reward and critic, or
    binary (Bernoulli logit) for the continue flag."""

    def __init__(self, in_features: int, units: int, layers: int, kind: str, bins: int = 255,
                 outscale: float = 1.0, norm="rms", act="silu"):
        super().__init__()
        self.kind = kind
        self.mlp = MLP(in_features, units, layers, norm, act)
        twohot = kind.startswith("twohot")
        self.out = Linear(self.mlp.out_features, bins if twohot else 1, outscale=outscale)
        if twohot:
            grid = torch.linspace(-20.0, 20.0, bins) if kind == "twohot_symlog" else ops.symexp_bins(bins)
            self.register_buffer("bins", grid, persistent=False)

    def forward(self, feat: torch.Tensor):
        """(…, F) → the distribution of the scalar."""
        return self.dist(self.outputs(feat))

    @compiled
    def outputs(self, feat: torch.Tensor) -> torch.Tensor:
        """The output layer's values (…, bins) or (…, 1)."""
        return self.out(self.mlp(feat))

    def dist(self, x: torch.Tensor):
        if self.kind == "binary":
            return Bernoulli(x.squeeze(-1))
        if self.kind == "mse":
            return SymlogMSE(x.squeeze(-1), event_dims=0, squash=False, scale=0.5)
        return TwoHot(x, self.bins, symlog=self.kind == "twohot_symlog")


class WorldModel(nn.Module):
    def __init__(self, obs_space: dict, action_dim: int, cfg: Config):
        super().__init__()
        m = cfg.model
        self.cfg = cfg
        self.action_dim = action_dim
        self.encoder = MultiEncoder(obs_space, m.encoder, m.norm, m.act)
        self.rssm = RSSM(m.rssm, self.encoder.out_features, action_dim, m.norm, m.act)
        stoch = self.rssm.stoch_dim
        self.feat_dim = m.rssm.deter + stoch
        self.decoder = MultiDecoder(obs_space, m.decoder, m.rssm.deter, stoch, m.norm, m.act)
        self.reward = ScalarHead(self.feat_dim, m.reward.units, m.reward.layers, m.reward.dist, m.reward.bins,
                                 m.reward.outscale, m.norm, m.act)
        self.cont = ScalarHead(self.feat_dim, m.cont.units, m.cont.layers, "binary", outscale=m.cont.outscale,
                               norm=m.norm, act=m.act)
        self.discount = 1.0 - 1.0 / cfg.behavior.horizon

    @staticmethod
    def features(state: dict[str, torch.Tensor]) -> torch.Tensor:
        """Concatenate h and the flattened z: (..., D + S·K)."""
        return torch.cat([state["deter"], state["stoch"].flatten(-2)], -1)

    @compiled
    def imagine_step(self, state: dict[str, torch.Tensor], action: torch.Tensor, dtype: torch.dtype):
        """A prior step (`RSSM.imagine_step`) and the new state's features (N, F) in `dtype`, the
        dtype the heads compute in (under run.compile the features are written once, already cast)."""
        state = self.rssm.imagine_step(state, action)
        return state, self.features(state).to(dtype)

    def initial(self, batch_size: int, device=None) -> dict[str, torch.Tensor]:
        state = self.rssm.initial(batch_size, device)
        state["action"] = torch.zeros(batch_size, self.action_dim, device=device)
        return state

    def loss(self, data: dict[str, torch.Tensor], state: dict[str, torch.Tensor]):
        """World-model losses on a replayed batch.

        data: observation keys (B, T, ...), "action" (B, T, A) taken at each step, "reward",
        "is_first", "is_terminal" (B, T). state: the carry before the first step (with "action").
        Returns (losses {name: (B, T)}, posterior sequence {deter, stoch} (B, T, ·), metrics).
        """
        B, T = data["is_first"].shape
        obs = {k: data[k].flatten(0, 1) for k in self.encoder.mlp_keys + self.encoder.cnn_keys}
        tokens = self.encoder(obs).unflatten(0, (B, T))  # (B, T, E)
        prev_actions = torch.cat([state["action"].unsqueeze(1), data["action"][:, :-1]], 1)  # (B, T, A)
        rssm_state = {"deter": state["deter"], "stoch": state["stoch"]}
        _, post = self.rssm.observe(rssm_state, prev_actions, tokens, data["is_first"])
        prior = self.rssm.prior(post["deter"])  # the prior's params at every posterior state
        dyn, rep, metrics = self.rssm.kl_losses(post["params"], prior)
        losses = {"dyn": dyn, "rep": rep}

        feat = self.features(post)  # (B, T, F)
        feat = feat.to(compute_dtype(feat))  # read by two heads: cast once under autocast
        recon = self.decoder(post["deter"].flatten(0, 1), post["stoch"].flatten(0, 1).flatten(-2))
        rec = sum(dist.loss(data[key].flatten(0, 1)) for key, dist in recon.items())
        losses["rec"] = rec.unflatten(0, (B, T))
        losses["rew"] = self.reward(feat).loss(data["reward"])
        cont_target = 1.0 - data["is_terminal"].float()
        if self.cfg.model.contdisc:
            cont_target = cont_target * self.discount
        losses["con"] = self.cont(feat).loss(cont_target)
        return losses, {"deter": post["deter"], "stoch": post["stoch"]}, metrics
