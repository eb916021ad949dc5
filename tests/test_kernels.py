"""Every fast path of reverie/kernels gives the reference path's values and gradients: each
technique alone against its plain torch form, and whole updates with every switch on against
every switch off."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from reverie import config as C
from reverie import kernels
from reverie.kernels import sampling, softmax
from test_agent import SMALL_CNN
from test_speed_options import losses_of_two_updates
from toy_envs import CueEnv, DictObsEnv

ALL_ON = dict.fromkeys(kernels.NAMES, True)


def test_config_section_names_every_technique():
    assert [f.name for f in dataclasses.fields(C.KernelConfig)] == list(kernels.NAMES)
    assert kernels.switches(C.KernelConfig()) == ALL_ON  # all on by default


def test_switches_are_scoped_and_off_outside():
    assert not any(kernels.enabled(n) for n in kernels.NAMES)
    with kernels.use({"small_softmax": True}):
        assert kernels.enabled("small_softmax") and not kernels.enabled("inverse_cdf")
        with kernels.use(kernels.REFERENCE):
            assert not kernels.enabled("small_softmax")
        assert kernels.enabled("small_softmax")
    assert not kernels.enabled("small_softmax")
    with pytest.raises(KeyError, match="unknown kernels \\['rms'\\]"):
        kernels.switches({"rms": True})


@pytest.mark.parametrize("shape", [(64, 32, 4), (7, 2), (16, 3, 5)])
@pytest.mark.parametrize("log", [False, True])
def test_small_softmax_gives_torchs_values_and_gradients(shape, log):
    torch.manual_seed(0)
    x = torch.randn(*shape, requires_grad=True)
    weights = torch.randn(*shape)
    assert softmax.applies(x)
    ours = softmax.softmax(x, log=log)
    (grad,) = torch.autograd.grad((ours * weights).sum(), x)
    reference = (torch.log_softmax if log else torch.softmax)(x, -1)
    (grad_ref,) = torch.autograd.grad((reference * weights).sum(), x)
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(grad, grad_ref)


def test_inverse_cdf_draws_the_class_whose_interval_holds_the_uniform():
    probs = torch.tensor([[0.1, 0.2, 0.7], [0.5, 0.5, 0.0], [0.3, 0.3, 0.3]])  # the last sums below 1
    uniform = torch.tensor([[0.05], [0.5], [0.95]])
    expected = torch.tensor([0, 1, 2])  # 0.05 < 0.1; 0.5 starts class 1; above the cumsum: the last class
    sample = sampling.one_hot_sample(probs, uniform)
    assert sample.dtype == torch.bool and torch.equal(sample.float().argmax(-1), expected)
    assert torch.equal(sample.sum(-1), torch.ones(3, dtype=torch.long))
    reference = torch.searchsorted(probs.cumsum(-1), uniform, right=True).clamp(max=2).squeeze(-1)
    assert torch.equal(reference, expected)


def test_inverse_cdf_frequencies_match_the_probabilities():
    torch.manual_seed(0)
    probs = torch.tensor([0.05, 0.15, 0.3, 0.5]).expand(200_000, 4)
    freq = sampling.one_hot_sample(probs).float().mean(0)
    torch.testing.assert_close(freq, probs[0], atol=4e-3, rtol=0)  # ~4σ at 200K draws


# ---------------------------------------------------------------------------------------------
# Whole updates

def two_updates(env_fn, overrides, kernel_settings):
    """Losses and final weights of two updates from the same initial weights and seed."""
    sets = [f"kernels.{name}={str(on).lower()}" for name, on in kernel_settings.items()]
    agent, losses = losses_of_two_updates(env_fn, list(overrides) + sets + ["run.threads=1"])
    return losses, {name: p.detach().clone() for name, p in agent.named_parameters()}


@pytest.mark.parametrize("env_fn, extra", [(CueEnv, []), (DictObsEnv, SMALL_CNN)], ids=["vector", "image"])
def test_update_with_every_kernel_gives_the_reference_update(env_fn, extra):
    """The second update checks the gradients (through the first one's optimiser step) too. The
    sampler is the same on both sides (another sampler draws other samples from the same seed;
    it is checked on its own above)."""
    fast_settings = ALL_ON
    reference = {**kernels.REFERENCE, "inverse_cdf": True}
    fast, fast_weights = two_updates(env_fn, extra, fast_settings)
    ref, ref_weights = two_updates(env_fn, extra, reference)
    assert fast.keys() == ref.keys()
    for key in ref:
        torch.testing.assert_close(fast[key], ref[key], rtol=1e-4, atol=1e-5, msg=key)
    for name in ref_weights:
        torch.testing.assert_close(fast_weights[name], ref_weights[name], rtol=1e-4, atol=1e-6, msg=name)


def test_marked_functions_compile_only_inside_the_run_compile_scope(monkeypatch):
    from reverie.kernels.compile import COMPILED, compiled

    made = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: made.append(kw) or (lambda *a: fn(*a) * 10))

    @compiled
    def double(x):
        return 2 * x

    assert double(1) == 2 and not made  # outside the scope: the function itself
    with kernels.use({}, compile=True):
        assert double(1) == 20 and double(2) == 40  # through torch.compile, made once
    assert made == [{"dynamic": False}] and double(1) == 2
    assert COMPILED[-1].endswith("double")
    for hot in ("RSSM.imagine_step", "RSSM.observe_step", "ScalarHead.outputs", "twohot_cross_entropy"):
        assert any(name.endswith(hot) for name in COMPILED), hot
