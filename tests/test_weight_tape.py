"""The posterior loop's weight tape (reverie.weight_tape): weight gradients formed once per
sequence equal autograd's per-step sums, for every core and posterior layout, and the tape stays
out of the way where no gradient is wanted."""

from __future__ import annotations

import pytest
import torch

from reverie import config as C
from reverie.kernels import weight_tape
from reverie.nn.layers import BlockLinear, run_layer, tape_layers
from reverie.agents.dreamer.rssm import RSSM
from reverie.kernels.weight_tape import SequenceTape, StepTape

VARIANTS = {
    "block core, 4 blocks, 2 hidden layers": (["debug"], ["model.rssm.blocks=4", "model.rssm.dyn_layers=2"]),
    "block core, posterior without hidden layer": (["debug"], ["model.rssm.obs_layers=0"]),
    "gru core with a bias-free normed gate (2023)": (["dreamerv3_2023", "debug"], []),
    "gaussian latents (Dreamer v1)": (["dreamerv1", "debug"], []),
}


def sequence_grads(rssm: RSSM, use_tape: bool, monkeypatch, learned=False):
    torch.manual_seed(3)
    B, T, E, A = 3, 5, 7, 2
    tokens = torch.randn(B, T, E, requires_grad=True)
    actions = torch.randn(B, T, A)
    is_first = torch.zeros(B, T, dtype=torch.bool)
    is_first[:, 0] = True
    is_first[1, 3] = True  # an episode starts mid-sequence
    monkeypatch.setattr(SequenceTape, "wanted", staticmethod(lambda layers: use_tape))
    torch.manual_seed(4)  # the same latent draws both times
    _, seq = rssm.observe(rssm.initial(B), actions, tokens, is_first)
    weights = torch.linspace(-1, 1, seq["stats"].numel()).view_as(seq["stats"])
    loss = seq["deter"].square().mean() + (seq["stats"] * weights).sum() + seq["stoch"][..., :1].sum()
    rssm.zero_grad(set_to_none=True)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in rssm.named_parameters() if p.grad is not None}
    return loss.detach(), grads, tokens.grad.clone()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_taped_weight_gradients_equal_autograds(variant, monkeypatch):
    presets, overrides = VARIANTS[variant]
    cfg = C.make_config(C.compose_presets(presets), overrides).model.rssm
    rssm = RSSM(cfg, token_dim=7, action_dim=2)
    loss_plain, grads_plain, tokens_plain = sequence_grads(rssm, False, monkeypatch)
    loss_taped, grads_taped, tokens_taped = sequence_grads(rssm, True, monkeypatch)
    torch.testing.assert_close(loss_taped, loss_plain)
    assert grads_taped.keys() == grads_plain.keys()
    for name in grads_plain:
        torch.testing.assert_close(grads_taped[name], grads_plain[name], rtol=1e-5, atol=1e-6, msg=name)
    torch.testing.assert_close(tokens_taped, tokens_plain, rtol=1e-5, atol=1e-6)
    # every taped weight took part: its gradient is not zero
    for name in rssm.tape_layout:
        assert any(g.abs().sum() > 0 for n, g in grads_taped.items() if n.startswith(name.replace("core.", "core_net.").replace("post.", "post_net.")))


def test_block_linear_gradients_through_a_tape_by_hand():
    """Two steps through a 2-block layer: ∂L/∂W_g = Σ_t x_{t,g}ᵀ·g_{t,g}, ∂L/∂b = Σ g."""
    torch.manual_seed(0)
    layer = BlockLinear(4, 6, blocks=2)
    xs = [torch.randn(3, 4) for _ in range(2)]
    layers = tape_layers(layer, "layer")
    tape = SequenceTape(layers, steps=2, rows=3, dtype=torch.float32, matmul_dtype=torch.float32)
    outputs = []
    for t, x in enumerate(xs):
        step = StepTape(tape.probe(t), tape.layout)
        outputs.append(run_layer(layer, x, step, "layer"))
        tape.record(step.recorded())
    tape.finish()
    upstream = [torch.randn(3, 6) for _ in range(2)]
    sum((y * g).sum() for y, g in zip(outputs, upstream)).backward()
    expected_w = sum(torch.einsum("ngi,ngo->gio", x.view(3, 2, 2), g.view(3, 2, 3)) for x, g in zip(xs, upstream))
    torch.testing.assert_close(layer.weight.grad, expected_w)
    torch.testing.assert_close(layer.bias.grad, sum(g.sum(0) for g in upstream))
    for y, x in zip(outputs, xs):  # the values are the layer's own
        torch.testing.assert_close(y, layer(x))


def test_no_tape_without_gradients():
    cfg = C.make_config(C.compose_presets(["debug"])).model.rssm
    rssm = RSSM(cfg, token_dim=7, action_dim=2)
    assert SequenceTape.wanted(rssm.step_layers())
    with torch.no_grad():
        assert not SequenceTape.wanted(rssm.step_layers())
    rssm.requires_grad_(False)
    assert not SequenceTape.wanted(rssm.step_layers())


def test_bfloat16_sequence_forms_weight_gradients_in_bfloat16(monkeypatch):
    """Under CPU bf16 autocast the tape's matmul runs in bf16 and returns float32 gradients close to
    the float32 ones."""
    cfg = C.make_config(C.compose_presets(["debug"])).model.rssm
    rssm = RSSM(cfg, token_dim=7, action_dim=2)
    _, grads32, _ = sequence_grads(rssm, True, monkeypatch)
    dtypes = []
    original = weight_tape.SequenceTape.weight_grads

    def spy(self, grad):
        dtypes.append(self.matmul_dtype)
        return original(self, grad)

    monkeypatch.setattr(weight_tape.SequenceTape, "weight_grads", spy)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, grads16, _ = sequence_grads(rssm, True, monkeypatch)
    assert dtypes == [torch.bfloat16]
    for name in grads32:
        assert grads16[name].dtype == torch.float32
        scale = grads32[name].abs().max()
        assert (grads16[name] - grads32[name]).abs().max() <= 0.05 * scale + 1e-6, name
