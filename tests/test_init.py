"""Initialisation scales against the official DreamerV3 initialiser (danijar/dreamerv3
`embodied/jax/nets.py`): truncated normal ×1.1368/√fan, i.e. effective std ≈ 1/√fan, with the
fans of a block-diagonal kernel (G, I/G, O/G) taken as (I, O), the whole layer's widths."""

from __future__ import annotations

import math

import torch

from reverie import config as C
from reverie.agents.dreamer.rssm import BlockGRU
from reverie.nn.layers import BlockLinear


def relative_std_error(weight: torch.Tensor, fan_in: int) -> float:
    return abs(weight.detach().std().item() * math.sqrt(fan_in) - 1.0)


def test_block_linear_std_uses_the_full_input_width_as_fan_in():
    torch.manual_seed(0)
    layer = BlockLinear(2048, 512, blocks=8)
    assert layer.weight.shape == (8, 256, 64)
    # 131072 draws: the sample std is within ~0.3% of the truth; a per-block fan (256) would be
    # √8 ≈ 2.83× off.
    assert relative_std_error(layer.weight, 2048) < 0.02
    assert layer.weight.abs().max().item() <= 2 * 1.1368 / math.sqrt(2048) + 1e-7  # cut at ±2σ
    assert torch.equal(layer.bias, torch.zeros(512))


def test_block_linear_outscale_scales_the_std():
    torch.manual_seed(0)
    layer = BlockLinear(2048, 512, blocks=8, outscale=0.1)
    assert abs(layer.weight.std().item() * math.sqrt(2048) / 0.1 - 1.0) < 0.02


def test_block_gru_gates_at_size1m_have_std_one_over_sqrt_deter():
    cfg = C.make_config(["dreamerv3", "size1m"])
    rssm = cfg.model.rssm
    assert (rssm.deter, rssm.hidden, rssm.blocks, rssm.dyn_layers) == (512, 64, 8, 1)
    torch.manual_seed(0)
    core = BlockGRU(rssm, stoch_dim=rssm.stoch * rssm.classes, action_dim=6, norm="rms", act="silu")
    gates = core.gates
    # The gates read the dyn hidden layer's output, D = 512 wide: weight (8, 64, 192), std 1/√512
    # (the per-block fan 64 would give 1/8, √8 larger).
    assert gates.weight.shape == (8, 64, 192)
    assert relative_std_error(gates.weight, 512) < 0.03
    hidden = core.dyn_hidden[0]  # input G·(D/G + 3H) = 8·(64 + 192) = 2048
    assert hidden.weight.shape == (8, 256, 64)
    assert relative_std_error(hidden.weight, 2048) < 0.03


def test_block_fan_in_switch_gives_the_per_block_std_to_both_block_gru_layers():
    cfg = C.make_config(["dreamerv3", "size1m"], ["model.rssm.block_fan_in=block"])
    torch.manual_seed(0)
    core = BlockGRU(cfg.model.rssm, stoch_dim=128, action_dim=6, norm="rms", act="silu")
    assert relative_std_error(core.gates.weight, 64) < 0.03  # per-block I = 512 / 8
    assert relative_std_error(core.dyn_hidden[0].weight, 256) < 0.03  # per-block I = 2048 / 8


def test_an_unknown_block_fan_in_is_a_config_error():
    import pytest

    with pytest.raises(C.ConfigError, match="model.rssm.block_fan_in must be layer or block"):
        C.make_config(["dreamerv3"], ["model.rssm.block_fan_in=blocks"])
