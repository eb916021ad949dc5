"""Output distributions: values, gradients and losses."""

import math

import torch

from reverie.nn import maths as ops
from reverie import kernels
from reverie.nn.distributions import Bernoulli, BoundedNormal, ImageMSE, MultiOneHot, OneHotCategorical, SymlogMSE, TwoHot
from reference_maths import twohot_encode


def test_onehot_sample_is_onehot_with_straight_through_gradient():
    logits = torch.randn(64, 5, requires_grad=True)
    dist = OneHotCategorical(logits)
    sample = dist.sample()
    assert torch.allclose(sample.detach().sum(-1), torch.ones(64))
    onehot = torch.nn.functional.one_hot(sample.detach().argmax(-1), 5).float()
    assert torch.allclose(sample.detach(), onehot, atol=1e-6)
    (sample * torch.arange(5.0)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_onehot_sampling_frequencies_follow_probs():
    torch.manual_seed(0)
    logits = torch.log(torch.tensor([0.7, 0.2, 0.1])).expand(20000, 3)
    freq = OneHotCategorical(logits).sample().mean(0)
    assert torch.allclose(freq, torch.tensor([0.7, 0.2, 0.1]), atol=0.02)


def test_onehot_sampling_skips_zero_probability_classes_and_keeps_a_short_cdf_on_the_last(monkeypatch):
    """The draw is the class k with cdf_{k−1} ≤ u < cdf_k: classes of probability 0 (equal cdf
    values) are never drawn, and a u above a cumulative sum that rounds below 1 takes the last class
    (kernel `inverse_cdf`)."""
    monkeypatch.setattr(kernels, "_active", {**kernels.REFERENCE, "inverse_cdf": True})
    dist = OneHotCategorical(torch.tensor([[0.0, -math.inf, 0.0, -math.inf]]).expand(4, 4))
    draws = {}
    for u in (0.0, 0.49, 0.5, 0.999):
        monkeypatch.setattr(torch, "rand", lambda shape, **kw: torch.full(shape, u, **kw))
        draws[u] = dist.sample()[0].tolist()
    assert draws == {0.0: [1, 0, 0, 0], 0.49: [1, 0, 0, 0], 0.5: [0, 0, 1, 0], 0.999: [0, 0, 1, 0]}
    short = OneHotCategorical(torch.zeros(1, 3))
    short.probs = torch.tensor([[0.3, 0.3, 0.3]])  # sums to 0.9: u = 0.95 lies beyond the cdf
    monkeypatch.setattr(torch, "rand", lambda shape, **kw: torch.full(shape, 0.95, **kw))
    torch.testing.assert_close(short.sample(), torch.tensor([[0.0, 0.0, 1.0]]))  # + p − sg(p) rounds


def test_onehot_entropy_kl_and_event_dims():
    uniform = OneHotCategorical(torch.zeros(2, 3, 4), event_dims=1)  # 3 latents of 4 classes
    assert torch.allclose(uniform.entropy(), torch.full((2,), 3 * math.log(4)))
    other = OneHotCategorical(torch.tensor([[0.0, 0.0, 0.0, math.log(5.0)]]).expand(2, 3, 4), event_dims=1)
    # KL(uniform ‖ q) with q = [1/8, 1/8, 1/8, 5/8] per latent: Σ 1/4·ln((1/4)/q_k)
    per_latent = 3 * 0.25 * math.log(0.25 / 0.125) + 0.25 * math.log(0.25 / 0.625)
    assert torch.allclose(uniform.kl(other), torch.full((2,), 3 * per_latent), atol=1e-6)


def test_multi_onehot_log_prob_sums_parts():
    logits = torch.zeros(1, 5)
    dist = MultiOneHot(logits, (2, 3))
    value = torch.tensor([[1.0, 0.0, 0.0, 0.0, 1.0]])
    assert torch.isclose(dist.log_prob(value), torch.tensor([math.log(1 / 2) + math.log(1 / 3)]))
    assert torch.isclose(dist.entropy(), torch.tensor([math.log(2) + math.log(3)]))


def test_bounded_normal_matches_torch_normal():
    mean, std_logit = torch.randn(8, 3), torch.randn(8, 3)
    dist = BoundedNormal(mean, std_logit, 0.1, 1.0)
    std = 0.9 * torch.sigmoid(std_logit + 2) + 0.1
    ref = torch.distributions.Normal(torch.tanh(mean), std)
    value = torch.randn(8, 3)
    assert torch.allclose(dist.log_prob(value), ref.log_prob(value).sum(-1), atol=1e-5)
    assert torch.allclose(dist.entropy(), ref.entropy().sum(-1), atol=1e-5)
    assert (dist.std >= 0.1).all() and (dist.std <= 1.0).all()


def test_twohot_loss_is_cross_entropy_with_encoded_target():
    bins = ops.symexp_bins(255)
    logits = torch.randn(6, 255)
    target = torch.tensor([0.0, 1.5, -3.0, 100.0, -0.2, 7.0])
    expected = -(twohot_encode(target, bins) * torch.log_softmax(logits, -1)).sum(-1)
    assert torch.allclose(TwoHot(logits, bins).loss(target), expected, atol=1e-5)
    assert torch.equal(TwoHot(torch.zeros(4, 255), bins).mean(), torch.zeros(4))


def test_bernoulli_soft_target_and_symlog_mse_and_image_mse():
    logit = torch.tensor([0.0])
    assert torch.isclose(Bernoulli(logit).loss(torch.tensor([0.997])), torch.tensor([math.log(2)]))
    pred = torch.tensor([[0.0, 1.0]])
    # targets symlog(e − 1) = 1 and symlog(0) = 0: squared errors 1 + 1 = 2
    assert torch.isclose(SymlogMSE(pred).loss(torch.tensor([[math.e - 1, 0.0]])), torch.tensor([2.0]))
    img = torch.full((1, 2, 2, 3), 0.5)
    target = torch.full((1, 2, 2, 3), 255, dtype=torch.uint8)
    assert torch.isclose(ImageMSE(img).loss(target), torch.tensor([12 * 0.25]))


def test_unimix_floor():
    probs = OneHotCategorical(torch.tensor([[100.0, 0.0, 0.0, 0.0]]), unimix=0.01).probs
    assert torch.allclose(probs, torch.tensor([[0.99 + 0.0025, 0.0025, 0.0025, 0.0025]]), atol=1e-6)
