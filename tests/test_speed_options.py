"""The speed options change how an update is computed, not what it computes: `run.compile` gives
the eager update's losses, bf16 autocast keeps float32 weights and close losses, and the
stride-2 CNN (DreamerV3 2023) has the shapes of the pooling one."""

import numpy as np
import pytest
import torch

from reverie import config as C
from reverie import kernels
from reverie.agents.dreamer import DreamerAgent
from reverie.envs import make_env
from reverie.errors import ConfigError
from reverie.nn.conv import ConvDecoder, ConvEncoder
from test_agent import SMALL_CNN, random_batch
from toy_envs import CueEnv, DictObsEnv

SHORT = ["batch_size=2", "batch_length=6", "behavior.imag_horizon=3"]


def losses_of_two_updates(env_fn, overrides):
    cfg = C.make_config(C.compose_presets(["debug"]), SHORT + list(overrides))
    env = make_env(env_fn, cfg.env)
    torch.manual_seed(0)
    agent = DreamerAgent(env.obs_space, env.act_space, cfg)
    batch = random_batch(env, cfg)
    torch.manual_seed(1)
    metrics = [agent.train_step(batch) for _ in range(2)]
    return agent, {k: torch.stack([m[k] for m in metrics]) for k in metrics[0] if k.startswith("loss/")}


@pytest.mark.parametrize("env_fn, extra", [(CueEnv, []), (DictObsEnv, SMALL_CNN)])
def test_compiled_update_gives_the_eager_losses(env_fn, extra):
    _, eager = losses_of_two_updates(env_fn, extra + ["run.compile=false"])
    _, compiled = losses_of_two_updates(env_fn, extra + ["run.compile=true"])
    assert eager.keys() == compiled.keys()
    for key in eager:  # the second update also checks the compiled gradients and optimiser step
        torch.testing.assert_close(compiled[key], eager[key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.parametrize("env_fn, extra", [(CueEnv, []), (DictObsEnv, SMALL_CNN)])
def test_bfloat16_autocast_keeps_float32_weights_and_close_losses(env_fn, extra):
    fp32_agent, fp32 = losses_of_two_updates(env_fn, extra)
    bf16_agent, bf16 = losses_of_two_updates(env_fn, extra + ["run.precision=bfloat16"])
    assert all(p.dtype == torch.float32 for p in bf16_agent.parameters())
    for key in ("loss/rec", "loss/rew", "loss/con", "loss/dyn", "loss/value"):
        assert torch.isfinite(bf16[key]).all(), key
        # bf16 keeps 8 bits of mantissa: the same losses to within a few percent
        torch.testing.assert_close(bf16[key], fp32[key], rtol=0.05, atol=0.05, msg=key)


def test_stride_cnn_halves_each_stage_and_mirrors_back():
    images = torch.randint(0, 256, (5, 64, 64, 3), dtype=torch.uint8)
    encoder = ConvEncoder((64, 64, 3), depth=4, mults=(1, 2, 4, 8), kernel=4, resize="stride")
    assert encoder(images).shape == (5, 4 * 4 * 32) and encoder.out_features == 4 * 4 * 32
    strides = [m.stride for m in encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert strides == [(2, 2)] * 4
    decoder = ConvDecoder(32, 16, (64, 64, 3), depth=4, mults=(1, 2, 4, 8), kernel=4, units=8,
                          block_space=4, resize="stride")
    out = decoder(torch.randn(5, 32), torch.randn(5, 16))
    out = out.detach()
    assert out.shape == (5, 64, 64, 3) and 0 <= float(out.min()) and float(out.max()) <= 1
    assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in decoder.modules()) == 4


def test_stride_cnn_with_an_odd_kernel_is_refused():
    with pytest.raises(ConfigError, match="even kernel"):
        ConvEncoder((64, 64, 3), depth=4, mults=(1, 2, 4, 8), kernel=5, resize="stride")
    with pytest.raises(ConfigError, match="unknown CNN resize 'avg'"):
        ConvEncoder((64, 64, 3), resize="avg")


def test_agent_trains_with_the_stride_cnn():
    cfg = C.make_config(C.compose_presets(["debug"]), SHORT + SMALL_CNN + [
        "model.encoder.resize=stride", "model.decoder.resize=stride",
        "model.encoder.kernel=4", "model.decoder.kernel=4"])
    env = make_env(DictObsEnv, cfg.env)
    agent = DreamerAgent(env.obs_space, env.act_space, cfg)
    metrics = agent.train_step(random_batch(env, cfg))
    assert np.isfinite(float(metrics["loss/rec"]))


@pytest.mark.parametrize("batch, switch, dtype", [(4, True, torch.float32), (64, True, torch.bfloat16),
                                                  (4, False, torch.bfloat16)])
def test_bfloat16_posterior_steps_over_few_rows_run_in_float32(batch, switch, dtype):
    """Under CPU bf16 autocast the posterior loop leaves autocast below kernels.precision.FEW_ROWS
    rows (kernel `few_rows_float32`), where bf16 matmuls do not pay, and keeps it from that many
    rows up or with the switch off."""
    cfg = C.make_config(C.compose_presets(["debug"]), [])
    env = make_env(CueEnv, cfg.env)
    agent = DreamerAgent(env.obs_space, env.act_space, cfg)
    rssm = agent.wm.rssm
    tokens = torch.randn(batch, 3, agent.wm.encoder.out_features)
    actions = torch.zeros(batch, 3, env.act_space.dim)
    is_first = torch.zeros(batch, 3, dtype=torch.bool)
    with torch.autocast("cpu", dtype=torch.bfloat16), kernels.use({"few_rows_float32": switch}):
        _, seq = rssm.observe(rssm.initial(batch), actions, tokens.bfloat16(), is_first)
        assert torch.is_autocast_enabled("cpu")  # restored after the loop
    assert seq["params"].dtype == dtype  # the posterior layer's output: bf16 only under autocast
