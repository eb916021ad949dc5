"""Output distributions with one interface: sample, mode, mean, log_prob, entropy, loss, kl.

Each wraps the raw network output of a head. Event dimensions are summed by the distribution,
so `log_prob`, `entropy`, `loss` and `kl` return one value per batch element.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from reverie import kernels
from reverie.kernels import sampling
from reverie.kernels import softmax as softmax_kernel
from reverie.nn import maths as ops


def softmax(x: torch.Tensor, log: bool = False) -> torch.Tensor:
    """softmax (or log-softmax) over the last dim (kernel `small_softmax` for few classes on CPU)."""
    if kernels.enabled("small_softmax") and softmax_kernel.applies(x):
        return softmax_kernel.softmax(x, log)
    return torch.log_softmax(x, -1) if log else torch.softmax(x, -1)


class Distribution:
    def sample(self) -> torch.Tensor:
        raise NotImplementedError

    def mode(self) -> torch.Tensor:
        raise NotImplementedError

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def entropy(self) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, target: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of a (stop-gradient) target."""
        return -self.log_prob(target.detach())

    def loss_sum(self, targets, scales) -> torch.Tensor:
        """Σ_i scale_i·loss(target_i); one pass over the outputs where the distribution can."""
        return sum(scale * self.loss(target) for target, scale in zip(targets, scales))


class OneHotCategorical(Distribution):
    """Categoricals over the last dim with a uniform mix; samples are one-hot vectors with
    straight-through gradients (sample + p − sg(p)). `event_dims` trailing dims (beyond the class
    dim) are summed, e.g. 1 for the RSSM's (…, stoch, classes) latents."""

    def __init__(self, logits: torch.Tensor, unimix: float = 0.0, event_dims: int = 0):
        logits = logits.float()
        if unimix:  # p = (1 − u)·softmax(logits) + u/K: a floor on every probability
            self.probs = (1 - unimix) * softmax(logits) + unimix / logits.shape[-1]
        else:
            self.log_probs = softmax(logits, log=True)
            self.probs = self.log_probs.exp()
        self.sum_dims = tuple(range(-1 - event_dims, 0))

    @functools.cached_property
    def log_probs(self) -> torch.Tensor:
        """ln p, computed on first use (sampling and the mode do not need it)."""
        return torch.log(self.probs)

    def _straight_through(self, onehot: torch.Tensor) -> torch.Tensor:
        """A one-hot value (bool or float) that passes the gradient of the probabilities."""
        return onehot.to(self.probs.dtype) + self.probs - self.probs.detach()

    def sample(self) -> torch.Tensor:
        probs = self.probs.detach()
        if kernels.enabled("inverse_cdf"):
            return self._straight_through(sampling.one_hot_sample(probs))
        index = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1).reshape(probs.shape[:-1] + (1,))
        return self._straight_through(index == torch.arange(probs.shape[-1], device=probs.device))

    def mode(self) -> torch.Tensor:
        # a comparison, not F.one_hot: that one checks the index range, a reduction and a host assert
        classes = torch.arange(self.probs.shape[-1], device=self.probs.device)
        return self._straight_through(self.probs.argmax(-1, keepdim=True) == classes)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return (self.log_probs * value).sum(self.sum_dims)

    def entropy(self) -> torch.Tensor:
        return -(self.probs * self.log_probs).sum(self.sum_dims)

    def kl(self, other: "OneHotCategorical") -> torch.Tensor:
        return (self.probs * (self.log_probs - other.log_probs)).sum(self.sum_dims)


class MultiOneHot(Distribution):
    """Independent one-hot categoricals of different sizes laid side by side on the last dim
    (MultiDiscrete actions). Values are the concatenated one-hots."""

    def __init__(self, logits: torch.Tensor, sizes: tuple[int, ...], unimix: float = 0.0):
        self.sizes = tuple(sizes)
        self.parts = [OneHotCategorical(x, unimix) for x in logits.split(self.sizes, -1)]

    def sample(self):
        return torch.cat([p.sample() for p in self.parts], -1)

    def mode(self):
        return torch.cat([p.mode() for p in self.parts], -1)

    def log_prob(self, value):
        return sum(p.log_prob(v) for p, v in zip(self.parts, value.split(self.sizes, -1)))

    def entropy(self):
        return sum(p.entropy() for p in self.parts)


class BoundedNormal(Distribution):
    """Normal(tanh(μ), σ) with σ = (max − min)·sigmoid(x + 2) + min over the last dim (actions)."""

    def __init__(self, mean: torch.Tensor, std_logit: torch.Tensor, minstd=0.1, maxstd=1.0):
        self.mean = torch.tanh(mean.float())
        self.std = (maxstd - minstd) * torch.sigmoid(std_logit.float() + 2.0) + minstd

    def sample(self):
        return self.mean + self.std * torch.randn_like(self.mean)

    def mode(self):
        return self.mean

    def log_prob(self, value):
        z = (value - self.mean) / self.std
        return (-0.5 * z.square() - self.std.log() - 0.5 * math.log(2 * math.pi)).sum(-1)

    def entropy(self):
        return (0.5 * math.log(2 * math.pi * math.e) + self.std.log()).sum(-1)


class Normal(Distribution):
    """Diagonal Normal(mean, std) with the last `event_dims` dims summed; reparameterised samples
    (the Gaussian latents of PlaNet and Dreamer v1, std = softplus(x) + min_std)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, event_dims: int = 1):
        self.mean_ = mean.float()
        self.std = std.float()
        self.sum_dims = tuple(range(-event_dims, 0))

    def sample(self) -> torch.Tensor:
        return self.mean_ + self.std * torch.randn_like(self.mean_)

    def mode(self) -> torch.Tensor:
        return self.mean_

    mean = mode

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        z = (value - self.mean_) / self.std
        return (-0.5 * z.square() - self.std.log() - 0.5 * math.log(2 * math.pi)).sum(self.sum_dims)

    def entropy(self) -> torch.Tensor:
        return (0.5 * math.log(2 * math.pi * math.e) + self.std.log()).sum(self.sum_dims)

    def kl(self, other: "Normal") -> torch.Tensor:
        """KL[self ‖ other] = ln(σ₂/σ₁) + (σ₁² + (μ₁ − μ₂)²) / (2σ₂²) − ½, summed over the event."""
        var_ratio = (self.std / other.std).square()
        mean_term = ((self.mean_ - other.mean_) / other.std).square()
        return (0.5 * (var_ratio + mean_term - 1.0 - var_ratio.log())).sum(self.sum_dims)


class TanhNormal(Distribution):
    """tanh(Normal(μ', σ)) over the last dim with μ' = 5·tanh(μ/5) and σ = softplus(x + s₀) + min_std,
    s₀ = ln(e^init_std − 1) (Dreamer v1's policy). Samples are reparameterised; the entropy has no
    closed form and is estimated from one sample, −ln p(a); the mode is tanh(μ')."""

    def __init__(self, mean: torch.Tensor, std_raw: torch.Tensor, min_std: float = 1e-4, init_std: float = 5.0):
        self.loc = 5.0 * torch.tanh(mean.float() / 5.0)
        shift = math.log(math.expm1(init_std))
        self.std = F.softplus(std_raw.float() + shift) + min_std

    def rsample_pre_tanh(self) -> torch.Tensor:
        return self.loc + self.std * torch.randn_like(self.loc)

    def sample(self) -> torch.Tensor:
        return torch.tanh(self.rsample_pre_tanh())

    def mode(self) -> torch.Tensor:
        return torch.tanh(self.loc)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self._log_prob_pre_tanh(torch.atanh(value.clamp(-1 + 1e-6, 1 - 1e-6)))

    def _log_prob_pre_tanh(self, pre: torch.Tensor) -> torch.Tensor:
        """ln p(tanh(u)) = ln N(u; μ', σ) − ln(1 − tanh²(u)), the Jacobian in a stable form."""
        z = (pre - self.loc) / self.std
        normal = -0.5 * z.square() - self.std.log() - 0.5 * math.log(2 * math.pi)
        log_det = 2.0 * (math.log(2.0) - pre - F.softplus(-2.0 * pre))
        return (normal - log_det).sum(-1)

    def entropy(self) -> torch.Tensor:
        return -self._log_prob_pre_tanh(self.rsample_pre_tanh())


class TwoHot(Distribution):
    """Categorical over fixed bins (symexp-spaced for DreamerV3); trained with the two-hot
    cross-entropy, predicting Σ p_k·b_k. Reward and value heads.

    With `symlog=True` (DreamerV3 2023) the bins live in symlog space: the target is symlog(y)
    and the prediction symexp(Σ p_k·b_k)."""

    def __init__(self, logits: torch.Tensor, bins: torch.Tensor, symlog: bool = False):
        self.logits = logits  # cast to float32 where used
        self.bins = bins
        self.symlog = symlog

    def mean(self) -> torch.Tensor:
        mean = ops.twohot_logits_mean(self.logits, self.bins)
        return ops.symexp(mean) if self.symlog else mean

    mode = mean

    def loss(self, target: torch.Tensor) -> torch.Tensor:
        return self.loss_sum([target], [1.0])

    def loss_sum(self, targets, scales) -> torch.Tensor:
        targets = [t.detach().float() for t in targets]
        targets = [ops.symlog(t) if self.symlog else t for t in targets]
        return ops.twohot_cross_entropy(self.logits, targets, self.bins, scales)


class Bernoulli(Distribution):
    """Bernoulli from a logit; soft targets in [0, 1] are allowed (the continue head's γ·(1 − term))."""

    def __init__(self, logit: torch.Tensor):
        self.logit = logit.float()

    def mean(self):
        return torch.sigmoid(self.logit)

    def mode(self):
        return (self.logit > 0).float()

    def sample(self):
        return torch.bernoulli(self.mean())

    def log_prob(self, value):
        return -F.binary_cross_entropy_with_logits(self.logit, value.float(), reduction="none")


class SymlogMSE(Distribution):
    """Squared error in symlog space, summed over the last `event_dims` dims (vector observations,
    and with `squash=False` the MSE reward and value heads of DreamerV1/V2). `scale` 0.5 makes the
    loss the negative log-likelihood of Normal(pred, 1) up to a constant (DreamerV1/V2)."""

    def __init__(self, pred: torch.Tensor, event_dims: int = 1, squash: bool = True, scale: float = 1.0):
        self.pred = pred.float()
        self.dims = tuple(range(-event_dims, 0))
        self.squash = squash
        self.scale = scale

    def mode(self):
        return ops.symexp(self.pred) if self.squash else self.pred

    mean = mode

    def loss(self, target):
        target = target.detach().float()
        target = ops.symlog(target) if self.squash else target
        error = (self.pred - target).square()
        return self.scale * (error.sum(self.dims) if self.dims else error)  # sum(()) would sum every dim


class ImageMSE(Distribution):
    """Image prediction in the [0, 1] intensity space, squared error against x/255 summed over
    (H, W, C); `scale` 0.5 gives the Normal(pred, 1) negative log-likelihood (DreamerV1/V2)."""

    def __init__(self, pred: torch.Tensor, scale: float = 1.0):
        self.pred = pred  # cast to float32 where used
        self.scale = scale

    def mode(self):
        return self.pred.float()

    mean = mode

    def loss(self, target):
        return ops.image_squared_error(self.pred, target.detach(), self.scale)
