"""Every fast path of reverie/kernels gives the reference path's values and gradients: each
technique alone against its plain torch form, and whole updates with every switch on against
every switch off."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from reverie import config as C
from reverie import kernels
from reverie.agents.dreamer.rssm import RSSM
from reverie.kernels import posterior_loop, rms_norm, sampling, softmax, twohot, weight_tape
from reverie.kernels.weight_tape import SequenceTape, StepTape, run_layer, tape_layers
from reverie.nn import maths
from reverie.nn.layers import BlockLinear
from reference_maths import twohot_encode
from test_agent import SMALL_CNN
from test_speed_options import losses_of_two_updates
from toy_envs import CueEnv, DictObsEnv

ALL_ON = dict.fromkeys(kernels.NAMES, True)


def assert_close_to_scale(actual, expected, rtol, name=""):
    """|actual − expected| ≤ rtol·max|expected| everywhere: summation order moves near-zero
    entries of a large gradient by more than their own size allows."""
    bound = rtol * expected.abs().max() + 1e-7
    assert (actual - expected).abs().max() <= bound, f"{name}: off by {(actual - expected).abs().max():.3g} > {bound:.3g}"


def test_config_section_names_every_technique():
    assert [f.name for f in dataclasses.fields(C.KernelConfig)] == list(kernels.NAMES)
    assert kernels.switches(C.KernelConfig()) == ALL_ON  # all on by default


def test_switches_are_scoped_and_off_outside():
    assert not any(kernels.enabled(n) for n in kernels.NAMES)
    with kernels.use({"rms_norm": True}):
        assert kernels.enabled("rms_norm") and not kernels.enabled("twohot_loss")
        with kernels.use(kernels.REFERENCE):
            assert not kernels.enabled("rms_norm")
        assert kernels.enabled("rms_norm")
    assert not kernels.enabled("rms_norm")
    with pytest.raises(KeyError, match="unknown kernels \\['rms'\\]"):
        kernels.switches({"rms": True})


def test_rms_norm_backward_is_the_true_gradient():
    torch.manual_seed(0)
    x = torch.randn(50, 24, dtype=torch.float64, requires_grad=True)
    w = (torch.rand(24, dtype=torch.float64) + 0.5).requires_grad_()
    torch.testing.assert_close(rms_norm.rms_norm(x, w, 1e-4), torch.nn.functional.rms_norm(x, (24,), w, 1e-4))
    assert torch.autograd.gradcheck(lambda a, b: rms_norm.rms_norm(a, b, 1e-4), (x, w))


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


def test_twohot_loss_is_the_dense_cross_entropy_with_the_true_gradient():
    """Two targets per row (one outside the bins), scaled: with the kernel and without, the loss
    and its gradient equal Σ_i s_i·CE of the dense two-hot encodings; the backward passes gradcheck."""
    torch.manual_seed(0)
    bins = maths.symexp_bins(15).double()
    logits = torch.randn(6, 5, 15, dtype=torch.float64, requires_grad=True)
    first = torch.randn(6, 5, dtype=torch.float64) * 30
    second = torch.full((6, 5), 1e9, dtype=torch.float64)  # beyond the last bin: all weight on it
    logp = torch.log_softmax(logits, -1)
    dense = sum(s * -(twohot_encode(t, bins) * logp).sum(-1) for t, s in [(first, 1.0), (second, 0.3)])
    (grad_ref,) = torch.autograd.grad(dense.sum(), logits)
    for settings in (ALL_ON, kernels.REFERENCE):
        with kernels.use(settings):
            ours = maths.twohot_cross_entropy(logits, [first, second], bins, [1.0, 0.3])
        (grad,) = torch.autograd.grad(ours.sum(), logits)  # computed in float32, the reference in float64
        torch.testing.assert_close(ours.double(), dense, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(grad.double(), grad_ref, rtol=1e-5, atol=1e-5)
    index = torch.randint(0, 15, (4, 3))
    weight = torch.rand(4, 3, dtype=torch.float64)
    x = torch.randn(4, 15, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: twohot.sparse_cross_entropy(a, index, weight), (x,))


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
# The posterior loop: hoisted input and weight tape

VARIANTS = {
    "block core, 4 blocks, 2 hidden layers": (["debug"], ["model.rssm.blocks=4", "model.rssm.dyn_layers=2"]),
    "block core, posterior without hidden layer": (["debug"], ["model.rssm.obs_layers=0"]),
    "gru core with a bias-free normed gate (2023)": (["dreamerv3_2023", "debug"], []),
    "gaussian latents (Dreamer v1)": (["dreamerv1", "debug"], []),
}


def sequence_grads(rssm: RSSM, fast: bool):
    torch.manual_seed(3)
    B, T, E, A = 3, 5, 7, 2
    tokens = torch.randn(B, T, E, requires_grad=True)
    actions = torch.randn(B, T, A)
    is_first = torch.zeros(B, T, dtype=torch.bool)
    is_first[:, 0] = True
    is_first[1, 3] = True  # an episode starts mid-sequence
    torch.manual_seed(4)  # the same latent draws both times
    with kernels.use({"posterior_loop": fast}):
        assert posterior_loop.applies(rssm, tokens) == fast
        _, seq = rssm.observe(rssm.initial(B), actions, tokens, is_first)
    weights = torch.linspace(-1, 1, seq["params"].numel()).view_as(seq["params"])
    loss = seq["deter"].square().mean() + (seq["params"] * weights).sum() + seq["stoch"][..., :1].sum()
    rssm.zero_grad(set_to_none=True)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in rssm.named_parameters() if p.grad is not None}
    return loss.detach(), grads, tokens.grad.clone()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_posterior_loop_gives_the_reference_loops_values_and_gradients(variant):
    presets, overrides = VARIANTS[variant]
    cfg = C.make_config(C.compose_presets(presets), overrides).model.rssm
    rssm = RSSM(cfg, token_dim=7, action_dim=2)
    loss_plain, grads_plain, tokens_plain = sequence_grads(rssm, fast=False)
    loss_fast, grads_fast, tokens_fast = sequence_grads(rssm, fast=True)
    torch.testing.assert_close(loss_fast, loss_plain)
    assert grads_fast.keys() == grads_plain.keys()
    for name in grads_plain:
        assert_close_to_scale(grads_fast[name], grads_plain[name], 1e-5, name)
    assert_close_to_scale(tokens_fast, tokens_plain, 1e-5, "tokens")
    for name in posterior_loop.step_layers(rssm):  # every taped weight took part
        module = name.replace("core.", "core_net.", 1).replace("post.", "post_net.", 1)
        assert any(g.abs().sum() > 0 for n, g in grads_fast.items() if n.startswith(module)), name


def test_block_linear_gradients_through_a_tape_by_hand():
    """Two steps through a 2-block layer: ∂L/∂W_g = Σ_t x_{t,g}ᵀ·g_{t,g}, ∂L/∂b = Σ g."""
    torch.manual_seed(0)
    layer = BlockLinear(4, 6, blocks=2)
    xs = [torch.randn(3, 4) for _ in range(2)]
    outputs = []
    with SequenceTape(tape_layers(layer, "layer"), steps=2, rows=3, dtype=torch.float32,
                      matmul_dtype=torch.float32) as tape:
        for t, x in enumerate(xs):
            step = StepTape(tape.probe(t), tape.layout)
            outputs.append(run_layer(layer, x, step, "layer"))
            tape.record(step.recorded())
    upstream = [torch.randn(3, 6) for _ in range(2)]
    sum((y * g).sum() for y, g in zip(outputs, upstream)).backward()
    expected_w = sum(torch.einsum("ngi,ngo->gio", x.view(3, 2, 2), g.view(3, 2, 3)) for x, g in zip(xs, upstream))
    torch.testing.assert_close(layer.weight.grad, expected_w)
    torch.testing.assert_close(layer.bias.grad, sum(g.sum(0) for g in upstream))
    for y, x in zip(outputs, xs):  # the values are the layer's own
        torch.testing.assert_close(y, layer(x))


def test_posterior_loop_stays_out_without_gradients():
    rssm = RSSM(C.make_config(C.compose_presets(["debug"])).model.rssm, token_dim=7, action_dim=2)
    tokens = torch.zeros(2, 3, 7)
    with kernels.use(ALL_ON):
        assert posterior_loop.applies(rssm, tokens)
        with torch.no_grad():
            assert not posterior_loop.applies(rssm, tokens)
        rssm.requires_grad_(False)
        assert not posterior_loop.applies(rssm, tokens)


def test_bfloat16_posterior_loop_forms_weight_gradients_in_bfloat16(monkeypatch):
    """Under CPU bf16 autocast the tape's matmul runs in bf16 and returns float32 gradients close to
    the float32 ones."""
    rssm = RSSM(C.make_config(C.compose_presets(["debug"])).model.rssm, token_dim=7, action_dim=2)
    _, grads32, _ = sequence_grads(rssm, fast=True)
    dtypes = []
    original = weight_tape.SequenceTape.weight_grads

    def spy(self, grad):
        dtypes.append(self.matmul_dtype)
        return original(self, grad)

    monkeypatch.setattr(weight_tape.SequenceTape, "weight_grads", spy)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, grads16, _ = sequence_grads(rssm, fast=True)
    assert dtypes == [torch.bfloat16]
    for name in grads32:
        assert grads16[name].dtype == torch.float32
        scale = grads32[name].abs().max()
        assert (grads16[name] - grads32[name]).abs().max() <= 0.05 * scale + 1e-6, name


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
    for hot in ("RSSM.imagine_step", "posterior_loop.step", "ScalarHead.outputs", "twohot_cross_entropy"):
        assert any(name.endswith(hot) for name in COMPILED), hot
