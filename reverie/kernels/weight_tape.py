"""Weight gradients of a recurrence's per-step layers, formed once per sequence.

A recurrence applies the same layer y_t = W·x_t + b at each of T steps over N rows (the posterior
loop: 64 steps of 16 rows). Autograd forms ∂L/∂W = Σ_t g_tᵀ·x_t as T small matmuls, each followed by
an accumulation into W's gradient; at N = 16 on a CPU those cost about as much as the steps' own
matmuls. With a tape, step t uses the stopped weights and adds a zero probe p_t,

    y_t = sg(W)·x_t + sg(b) + p_t,      so ∂L/∂p_t = g_t,

and records x_t. The probes of all layers and all T steps are slices of one (T, N, ΣO) zero tensor
made from the weights by one autograd node, whose backward receives G = (g_1 … g_T) and forms, per
layer,

    ∂L/∂W = Gᵀ·X,   ∂L/∂b = Σ_rows G

as one matmul over T·N rows (in the sequence's autocast dtype, where a large matmul pays), X being
the recorded inputs (T, N, I). cuDNN's RNN backward batches its weight gradients the same way.
Gradients with respect to the inputs x_t are untouched: they flow through sg(W) as before.

Use: `with SequenceTape(layers, steps, rows, ...) as tape:` around the loop; step t gets
`tape.probe(t)` (N, ΣO), wraps it in a `StepTape` (which layers call through `StepTape.linear`,
e.g. via `run_layer`) and hands back `StepTape.recorded()` (N, ΣI) to `tape.record`; leaving the
block hands the records to the backward. A layer is (weight, bias or None, kind): kind "linear"
for a weight (O, I), "block" for a block-diagonal weight (G, I/G, O/G) (`nn.layers.BlockLinear`).
Used by the posterior loop kernel (`posterior_loop.py`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def layout(layers: dict[str, tuple]) -> dict[str, tuple[int, int, int, int]]:
    """name → (output offset, outputs, input offset, inputs) in the packed probes and records."""
    out = {}
    o = i = 0
    for name, (weight, _, kind) in layers.items():
        if kind == "linear":
            n_out, n_in = weight.shape
        else:
            n_out, n_in = weight.shape[0] * weight.shape[2], weight.shape[0] * weight.shape[1]
        out[name] = (o, n_out, i, n_in)
        o, i = o + n_out, i + n_in
    return out


class StepTape:
    """One step's part of a `SequenceTape`: each taped layer applies sg(W), sg(b) and adds its
    slice of the step's probe (N, ΣO); its input is kept for `recorded`."""

    def __init__(self, probe: torch.Tensor, layout: dict[str, tuple[int, int, int, int]]):
        self.probe, self.layout = probe, layout
        self.inputs: dict[str, torch.Tensor] = {}

    def linear(self, name: str, x: torch.Tensor, weight: torch.Tensor, bias, forward=F.linear) -> torch.Tensor:
        """forward(x, sg(weight), sg(bias)) + probe; `forward` is the layer's map from its parameters
        (F.linear, or `BlockLinear.apply_params`)."""
        self.inputs[name] = x
        y = forward(x, weight.detach(), None if bias is None else bias.detach())
        start, size = self.layout[name][:2]
        return y + self.probe[..., start:start + size].to(y.dtype)

    def recorded(self) -> torch.Tensor:
        """The taped layers' inputs side by side, (N, ΣI) in layout order (their common dtype)."""
        return torch.cat([self.inputs[name] for name in self.layout], -1)


class SequenceTape:
    def __init__(self, layers: dict[str, tuple], steps: int, rows: int, dtype: torch.dtype,
                 matmul_dtype: torch.dtype):
        """layers: name → (weight, bias or None, kind); probes of `dtype` (the steps' output dtype);
        the weight-gradient matmuls run in `matmul_dtype` and return the weights' dtype."""
        self.layers, self.layout = layers, layout(layers)
        self.matmul_dtype = matmul_dtype
        self.records: list[torch.Tensor] = []
        self.inputs = None
        n_out = sum(entry[1] for entry in self.layout.values())
        params = [p for weight, bias, _ in layers.values() for p in (weight, bias)]
        probes = _Probes.apply(self, (steps, rows, n_out), dtype, *params)  # (T, N, ΣO)
        self.probes = probes.unbind(0)  # one node gathers the T steps' gradients

    def probe(self, t: int) -> torch.Tensor:
        return self.probes[t]

    def record(self, inputs: torch.Tensor) -> None:
        self.records.append(inputs.detach())

    def __enter__(self) -> "SequenceTape":
        return self

    def __exit__(self, *exc) -> None:
        self.finish()

    def finish(self) -> None:
        """Stack the recorded inputs (T, N, ΣI) for the backward and let go of the probes (which
        point back here through their autograd node); leaving the `with` block calls it."""
        self.inputs = torch.stack(self.records).flatten(0, 1).to(self.matmul_dtype)  # (T·N, ΣI)
        self.records, self.probes = [], ()

    def weight_grads(self, grad: torch.Tensor) -> list:
        """Per layer ∂L/∂W = Gᵀ·X and ∂L/∂b = Σ G, for G (T, N, ΣO) and the recorded X."""
        g_all = grad.flatten(0, 1)  # (T·N, ΣO)
        g_mm = g_all.to(self.matmul_dtype)
        grads = []
        for name, (weight, bias, kind) in self.layers.items():
            o, n_out, i, n_in = self.layout[name]
            x, g = self.inputs[:, i:i + n_in], g_mm[:, o:o + n_out]  # (T·N, I), (T·N, O)
            if kind == "linear":
                dw = g.t() @ x  # (O, I)
            else:  # per block X_gᵀ·G_g: (G, I/G, O/G)
                blocks = weight.shape[0]
                xg = x.unflatten(-1, (blocks, -1)).permute(1, 2, 0)  # (G, I/G, T·N)
                dw = torch.bmm(xg, g.unflatten(-1, (blocks, -1)).transpose(0, 1))
            grads += [dw.to(weight.dtype), None if bias is None else g_all[:, o:o + n_out].sum(0, dtype=bias.dtype)]
        return grads


class _Probes(torch.autograd.Function):
    """Zeros (T, N, ΣO) whose gradient G turns into the taped layers' weight and bias gradients."""

    @staticmethod
    def forward(ctx, tape, shape, dtype, *params):
        ctx.tape = tape
        return torch.zeros(shape, dtype=dtype, device=params[0].device)

    @staticmethod
    def backward(ctx, grad):
        return (None, None, None, *ctx.tape.weight_grads(grad))


def is_block(layer: nn.Module) -> bool:
    """A block-diagonal linear layer (`nn.layers.BlockLinear`: weight (G, I/G, O/G), `apply_params`)."""
    return hasattr(layer, "apply_params") and layer.weight.dim() == 3


def run_layer(layer: nn.Module, x: torch.Tensor, tape: StepTape, name: str) -> torch.Tensor:
    """layer(x) with each linear map in it (Sequentials are walked, their children named
    `name.index`) on its stopped parameters plus the tape's probe of that name."""
    if isinstance(layer, nn.Sequential):
        for i, child in enumerate(layer):
            x = run_layer(child, x, tape, f"{name}.{i}")
        return x
    if isinstance(layer, nn.Linear):
        return tape.linear(name, x, layer.weight, layer.bias)
    if is_block(layer):
        return tape.linear(name, x, layer.weight, layer.bias, layer.apply_params)
    return layer(x)


def tape_layers(module: nn.Module, name: str) -> dict[str, tuple]:
    """The (weight, bias, kind) of every linear map in `module`, named as `run_layer(module, ...,
    name=name)` names them."""
    layers = {}
    for path, layer in module.named_modules(prefix=name):
        if isinstance(layer, nn.Linear):
            layers[path] = (layer.weight, layer.bias, "linear")
        elif is_block(layer):
            layers[path] = (layer.weight, layer.bias, "block")
    return layers
