"""The posterior loop, hoisted and taped (switch `posterior_loop`): the values and gradients of
`RSSM.observe`'s plain loop, faster on a CPU, where the loop's steps are small (16 rows of a
16 × 64 batch) and per-step overheads dominate. Two techniques:

- hoisted input: the posterior's first layer W·[h_t, x_t] + b = W_h·h_t + b + W_x·x_t, and W_x·x_t
  does not depend on the state, so it is computed for all B·T steps in one matmul before the loop
  (and its weight gradient is formed once, `unbind` instead of T zero-padded selects);
- the weight tape (`weight_tape.py`): every other per-step layer's weight gradient is formed once
  per sequence, one matmul over T·B rows, instead of T small ones each accumulated into the weight.

The step below runs the RSSM's own modules (norms, activations, the GRU update, the latent's
distribution) in the order its `observe_step` does; only the linear maps go through the tape.
It reads the RSSM's layout: a block core (`in_deter`, `in_stoch`, `in_action`, `dyn_hidden`,
`gates`) or a GRU cell (`inputs`, `gates`), and the posterior MLP `post_net`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reverie import kernels
from reverie.kernels.compile import compiled
from reverie.kernels.precision import compute_dtype, float32_for_few_rows
from reverie.kernels.weight_tape import SequenceTape, StepTape, run_layer, tape_layers


def applies(rssm: nn.Module, tokens: torch.Tensor) -> bool:
    """Switched on, on a CPU, and a gradient will reach the RSSM's weights."""
    return (kernels.enabled("posterior_loop") and tokens.device.type == "cpu" and torch.is_grad_enabled()
            and rssm.post_net[-1].weight.requires_grad)


def first_layer(rssm: nn.Module) -> tuple[str, nn.Linear]:
    """The posterior's first linear layer (on [h, x]) and its name in the tape."""
    return ("post.0.0", rssm.post_net[0][0]) if rssm.cfg.obs_layers else ("post.0", rssm.post_net[0])


def step_layers(rssm: nn.Module) -> dict[str, tuple]:
    """The taped linear maps of a step, name → (weight, bias, kind); of the posterior's first
    layer only its state columns W_h."""
    core = rssm.core_net
    names = ("in_deter", "in_stoch", "in_action", "dyn_hidden", "gates") if hasattr(core, "blocks") else ("inputs", "gates")
    layers = {k: v for name in names for k, v in tape_layers(getattr(core, name), f"core.{name}").items()}
    layers.update(tape_layers(rssm.post_net, "post"))
    name, first = first_layer(rssm)
    layers[name] = (first.weight[:, :rssm.cfg.deter], first.bias, "linear")
    return layers


def core_step(rssm: nn.Module, deter, stoch, action, tape: StepTape) -> torch.Tensor:
    """`RSSM.core` with the linear maps on the tape: (N, D), (N, S, K), (N, A) → (N, D)."""
    core, stoch, action = rssm.core_net, stoch.flatten(-2), rssm.scale_action(action)
    if hasattr(core, "blocks"):  # BlockGRU.forward
        G, n = core.blocks, deter.shape[0]
        x = torch.cat([run_layer(core.in_deter, deter, tape, "core.in_deter"),
                       run_layer(core.in_stoch, stoch, tape, "core.in_stoch"),
                       run_layer(core.in_action, action, tape, "core.in_action")], -1)  # (N, 3H)
        x = torch.cat([deter.reshape(n, G, -1), x.unsqueeze(1).expand(n, G, x.shape[-1])], -1)
        x = run_layer(core.dyn_hidden, x.reshape(n, -1), tape, "core.dyn_hidden")
        reset, cand, update = run_layer(core.gates, x, tape, "core.gates").reshape(n, G, 3, -1).unbind(2)
        return core.gru_update(reset, cand, update, deter.reshape(n, G, -1)).reshape(n, -1)
    x = run_layer(core.inputs, torch.cat([stoch, action], -1), tape, "core.inputs")  # GRU.forward
    reset, cand, update = run_layer(core.gates, torch.cat([x, deter], -1), tape, "core.gates").chunk(3, -1)
    return core.gru_update(reset, cand, update, deter)


def posterior(rssm: nn.Module, deter, token_part, tape: StepTape) -> torch.Tensor:
    """`RSSM.posterior` from the state (N, D) and the hoisted W_x·x_t (N, P) → params (N, S, ·)."""
    name, first = first_layer(rssm)
    x = tape.linear(name, deter, first.weight[:, :rssm.cfg.deter], first.bias) + token_part
    if rssm.cfg.obs_layers:  # the first Dense's norm and activation
        x = rssm.post_net[0][2](rssm.post_net[0][1](x))
    for i in range(1, len(rssm.post_net)):
        x = run_layer(rssm.post_net[i], x, tape, f"post.{i}")
    return x.unflatten(-1, rssm.params_shape)


@compiled
def step(rssm: nn.Module, state, prev_action, token_part, is_first, probe, layout):
    """`RSSM.observe_step` on the tape: the new state, the posterior's params and the taped
    layers' inputs (N, ΣI) for the weight gradients."""
    tape = StepTape(probe, layout)
    state, prev_action = rssm.reset(state, prev_action, is_first)
    deter = core_step(rssm, state["deter"], state["stoch"], prev_action, tape)
    params = posterior(rssm, deter, token_part, tape)
    return {"deter": deter, "stoch": rssm.latent(params)}, params, tape.recorded()


def observe(rssm: nn.Module, state, prev_actions, tokens, is_first):
    """`RSSM.observe`: prev_actions (B, T, A), tokens (B, T, E), is_first (B, T) → the last state
    and {"deter": (B, T, D), "stoch": (B, T, S, K), "params": (B, T, S, ·)}."""
    B, T = is_first.shape
    name, first = first_layer(rssm)
    token_part = F.linear(tokens, first.weight[:, rssm.cfg.deter:]).unbind(1)  # T × (B, P), one matmul
    matmul_dtype = compute_dtype(prev_actions.float())  # the sequence's autocast dtype, for the weight gradients
    deters, stochs, params = [], [], []
    with float32_for_few_rows(B, tokens.device):
        layers = step_layers(rssm)
        with SequenceTape(layers, T, B, compute_dtype(prev_actions.float()), matmul_dtype) as tape:
            for t in range(T):
                state, param, inputs = step(rssm, state, prev_actions[:, t], token_part[t], is_first[:, t],
                                           tape.probe(t), tape.layout)
                tape.record(inputs)
                deters.append(state["deter"])
                stochs.append(state["stoch"])
                params.append(param)
    return state, {"deter": torch.stack(deters, 1), "stoch": torch.stack(stochs, 1), "params": torch.stack(params, 1)}
