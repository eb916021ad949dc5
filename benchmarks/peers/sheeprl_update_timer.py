"""Time the gradient updates of SheepRL's DreamerV3 (the peer of the speed benchmark), through its public API.

Run by the python of the peer venv (`sheeprl_env.ensure_sheeprl_venv`), never by Reverie's:

    OMP_NUM_THREADS=2 <peer-venv>/bin/python sheeprl_update_timer.py --obs vector --updates 5 --warmup 2

Set OMP_NUM_THREADS before Python starts: SheepRL's own `num_threads` setting exports it after torch is imported,
too late to matter.

What it does, as SheepRL's command line (`sheeprl.cli.run_algorithm`) and its DreamerV3 training loop
(`sheeprl.algos.dreamer_v3.dreamer_v3.main`) do, without the environment interaction:
  * composes SheepRL's hydra config: `exp=dreamer_v3 algo=dreamer_v3_XS` (see `overrides`), CPU, `32-true` precision,
    no `torch.compile`, batch 16 x 64, imagination horizon 15;
  * applies the global settings of its command line (float32 matmul precision, the `validate_args` of the
    distributions, the metric aggregator and the timer, the seed);
  * builds the agent with its `build_agent` on the observation and action spaces of its own environment factory
    (`make_env`): CartPole-v1 with the 4-d state (`state` key) for `--obs vector`, the same CartPole rendered to
    64x64 RGB (`rgb` key, uint8, channel first, image only) for `--obs image`; 2 discrete actions in both;
  * the three Adam optimisers of its config, set up with Fabric, and its `Moments`;
  * one fixed random replay batch in the layout its `sample_batches` yields ([T=64, B=16, ...] float32 tensors:
    the observation keys, one-hot `actions`, `rewards`, `terminated`, `truncated`, `is_first`).
A timed update is what one iteration of its loop does per gradient step: the (soft) update of the target critic, then
`train(...)` (world model, then actor and critic on the imagined trajectories, with their optimiser steps). Prints one
JSON line on stdout; everything else goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings

PEER = "sheeprl 0.8.4"


def overrides(obs: str, precision: str = "32-true") -> list[str]:
    """The hydra overrides of the benchmark: SheepRL's DreamerV3 at its XS size, batch 16 x 64, horizon 15, CPU,
    Lightning precision `precision` (its default 32-true, or bf16-mixed)."""
    common = [
        "exp=dreamer_v3",
        "algo=dreamer_v3_XS",
        "env=gym",
        "env.id=CartPole-v1",
        "env.num_envs=1",
        "env.capture_video=False",
        "env.screen_size=64",
        "algo.per_rank_batch_size=16",
        "algo.per_rank_sequence_length=64",
        "algo.horizon=15",
        "algo.compile.enabled=False",
        "fabric.accelerator=cpu",
        "fabric.devices=1",
        f"fabric.precision={precision}",
        "model_manager.disabled=True",
    ]
    if obs == "vector":
        keys = ["algo.cnn_keys.encoder=[]", "algo.cnn_keys.decoder=[]",
                "algo.mlp_keys.encoder=[state]", "algo.mlp_keys.decoder=[state]"]
    else:
        keys = ["algo.cnn_keys.encoder=[rgb]", "algo.cnn_keys.decoder=[rgb]",
                "algo.mlp_keys.encoder=[]", "algo.mlp_keys.decoder=[]"]
    return common + keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--obs", choices=["vector", "image"], required=True)
    parser.add_argument("--updates", type=int, default=5, help="timed gradient updates")
    parser.add_argument("--warmup", type=int, default=2, help="untimed gradient updates before them")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"])
    args = parser.parse_args()
    if args.updates < 1 or args.warmup < 0:
        parser.error("--updates must be >= 1 and --warmup >= 0")

    # Everything but the JSON line goes to stderr (SheepRL and Lightning print and warn)
    real_stdout = sys.stdout
    sys.stdout = sys.stderr
    warnings.simplefilter("ignore")

    import gymnasium as gym
    import hydra
    import numpy as np
    import torch
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf
    from torch.distributions import Distribution

    import sheeprl  # noqa: F401  (registers the algorithms)
    from sheeprl.algos.dreamer_v3 import utils as dv3_utils
    from sheeprl.algos.dreamer_v3.agent import build_agent
    from sheeprl.algos.dreamer_v3.dreamer_v3 import train
    from sheeprl.algos.dreamer_v3.utils import Moments
    from sheeprl.utils.env import make_env
    from sheeprl.utils.metric import MetricAggregator
    from sheeprl.utils.timer import timer
    from sheeprl.utils.utils import dotdict

    # The config, composed and resolved as its command line does (`sheeprl.cli.run`)
    hydra_overrides = overrides(args.obs, args.precision) + [f"seed={args.seed}"]
    with initialize_config_module(config_module="sheeprl.configs", version_base="1.3"):
        composed = compose(config_name="config", overrides=hydra_overrides)
    cfg = dotdict(OmegaConf.to_container(composed, resolve=True, throw_on_missing=True))

    # The global settings of `sheeprl.cli.run_algorithm` (OMP_NUM_THREADS excepted: see the module docstring)
    torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
    Distribution.set_default_validate_args(cfg.distribution.validate_args)
    fabric = hydra.utils.instantiate(cfg.fabric, strategy=cfg.fabric.get("strategy", "auto"), _convert_="all")
    timer.disabled = cfg.metric.log_level == 0 or cfg.metric.disable_timer
    for key in set(cfg.metric.aggregator.metrics.keys()) - dv3_utils.AGGREGATOR_KEYS:
        cfg.metric.aggregator.metrics.pop(key, None)
    MetricAggregator.disabled = cfg.metric.log_level == 0 or len(cfg.metric.aggregator.metrics) == 0

    result = {}

    def run(fabric, cfg):
        # `reproducible` of `run_algorithm`
        fabric.seed_everything(cfg.seed)
        torch.use_deterministic_algorithms(cfg.torch_use_deterministic_algorithms)
        # What `dreamer_v3.main` fixes before building the agent
        cfg.env.frame_stack = -1

        # The spaces of its own environment factory, as `main` reads them from its vector env
        env = make_env(cfg, cfg.seed, 0, None, "train", vector_env_idx=0)()
        observation_space, action_space = env.observation_space, env.action_space
        env.close()
        assert isinstance(observation_space, gym.spaces.Dict), observation_space
        assert isinstance(action_space, gym.spaces.Discrete), action_space
        is_continuous = False
        actions_dim = tuple([int(action_space.n)])
        obs_keys = cfg.algo.cnn_keys.encoder + cfg.algo.mlp_keys.encoder
        if args.obs == "image":
            assert observation_space["rgb"].shape == (3, 64, 64) and observation_space["rgb"].dtype == np.uint8

        world_model, actor, critic, target_critic, player = build_agent(
            fabric, actions_dim, is_continuous, cfg, observation_space
        )
        world_optimizer = hydra.utils.instantiate(
            cfg.algo.world_model.optimizer, params=world_model.parameters(), _convert_="all"
        )
        actor_optimizer = hydra.utils.instantiate(cfg.algo.actor.optimizer, params=actor.parameters(), _convert_="all")
        critic_optimizer = hydra.utils.instantiate(
            cfg.algo.critic.optimizer, params=critic.parameters(), _convert_="all"
        )
        world_optimizer, actor_optimizer, critic_optimizer = fabric.setup_optimizers(
            world_optimizer, actor_optimizer, critic_optimizer
        )
        moments = Moments(
            cfg.algo.actor.moments.decay,
            cfg.algo.actor.moments.max,
            cfg.algo.actor.moments.percentile.low,
            cfg.algo.actor.moments.percentile.high,
        )
        aggregator = None
        if not MetricAggregator.disabled:
            aggregator = hydra.utils.instantiate(cfg.metric.aggregator, _convert_="all").to(fabric.device)

        # One fixed batch, as `sample_batches` yields it: [T, B, ...] float32 on the device
        T, B = cfg.algo.per_rank_sequence_length, cfg.algo.per_rank_batch_size
        rng = np.random.default_rng(cfg.seed)
        batch = {}
        for k in obs_keys:
            space = observation_space[k]
            if space.dtype == np.uint8:
                batch[k] = rng.integers(0, 256, (T, B, *space.shape), dtype=np.uint8)
            else:
                batch[k] = rng.standard_normal((T, B, *space.shape)).astype(np.float32)
        batch["actions"] = np.eye(actions_dim[0], dtype=np.float32)[rng.integers(0, actions_dim[0], (T, B))]
        batch["rewards"] = np.ones((T, B, 1), dtype=np.float32)
        terminated = (rng.random((T, B, 1)) < 1 / 32).astype(np.float32)
        batch["terminated"] = terminated
        batch["truncated"] = np.zeros((T, B, 1), dtype=np.float32)
        is_first = np.zeros((T, B, 1), dtype=np.float32)
        is_first[1:] = terminated[:-1]
        batch["is_first"] = is_first
        data = {k: torch.as_tensor(v).to(fabric.device).float() for k, v in batch.items()}

        step = 0

        def update():
            # One gradient step of the loop of `dreamer_v3.main`: the target critic, then `train`
            nonlocal step
            if step % cfg.algo.critic.per_rank_target_network_update_freq == 0:
                tau = 1 if step == 0 else cfg.algo.critic.tau
                for cp, tcp in zip(critic.module.parameters(), target_critic.parameters()):
                    tcp.data.copy_(tau * cp.data + (1 - tau) * tcp.data)
            train(
                fabric, world_model, actor, critic, target_critic, world_optimizer, actor_optimizer,
                critic_optimizer, data, aggregator, cfg, is_continuous, actions_dim, moments,
            )
            step += 1

        # The optimiser steps must really happen: the weights of all three change at the first update
        before = {name: [p.detach().clone() for p in m.parameters()]
                  for name, m in (("world_model", world_model), ("actor", actor), ("critic", critic))}
        for _ in range(args.warmup):
            update()
        seconds, cpu_seconds = [], []
        for _ in range(args.updates):
            start, cpu_start = time.perf_counter(), time.process_time()
            update()
            seconds.append(time.perf_counter() - start)
            cpu_seconds.append(time.process_time() - cpu_start)
        for name, m in (("world_model", world_model), ("actor", actor), ("critic", critic)):
            changed = any(not torch.equal(a, p.detach()) for a, p in zip(before[name], m.parameters()))
            assert changed, f"the weights of the {name} did not change: no update was made"

        # FLOPs of one update, counted as for ours (torch.utils.flop_counter: matmuls and convs)
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            update()
        result["flops_per_update"] = counter.get_total_flops()

        def count(m):
            return sum(p.numel() for p in m.parameters())

        wm_cfg = cfg.algo.world_model
        encoder_convs = [m for m in world_model.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
        decoder_deconvs = [m for m in world_model.observation_model.modules()
                           if isinstance(m, torch.nn.ConvTranspose2d)]
        dims = {
            "observation": {k: list(observation_space[k].shape) for k in obs_keys},
            "observation_dtype": {k: str(observation_space[k].dtype) for k in obs_keys},
            "actions": list(actions_dim),
            "recurrent_state_size": wm_cfg.recurrent_model.recurrent_state_size,
            "recurrent_model_dense_units": wm_cfg.recurrent_model.dense_units,
            "transition_hidden_size": wm_cfg.transition_model.hidden_size,
            "representation_hidden_size": wm_cfg.representation_model.hidden_size,
            "dense_units": cfg.algo.dense_units,
            "mlp_layers": cfg.algo.mlp_layers,
            "encoder_mlp_layers": wm_cfg.encoder.mlp_layers if cfg.algo.mlp_keys.encoder else 0,
            "cnn_channels_multiplier": wm_cfg.encoder.cnn_channels_multiplier if cfg.algo.cnn_keys.encoder else None,
            "encoder_cnn": [
                {"out_channels": c.out_channels, "kernel": c.kernel_size[0], "stride": c.stride[0],
                 "padding": c.padding[0]} for c in encoder_convs
            ],
            "decoder_cnn_transpose": [
                {"out_channels": c.out_channels, "kernel": c.kernel_size[0], "stride": c.stride[0],
                 "padding": c.padding[0]} for c in decoder_deconvs
            ],
            "stochastic": wm_cfg.stochastic_size,
            "discrete": wm_cfg.discrete_size,
            "reward_bins": wm_cfg.reward_model.bins,
            "critic_bins": cfg.algo.critic.bins,
            "unimix": cfg.algo.unimix,
            "horizon": cfg.algo.horizon,
            "gamma": cfg.algo.gamma,
            "lambda": cfg.algo.lmbda,
            "target_critic_tau": cfg.algo.critic.tau,
            "clip_gradients": {
                "world_model": wm_cfg.clip_gradients,
                "actor": cfg.algo.actor.clip_gradients,
                "critic": cfg.algo.critic.clip_gradients,
            },
            "batch": B,
            "sequence_length": T,
            "precision": cfg.fabric.precision,
            "float32_matmul_precision": cfg.float32_matmul_precision,
            "compile": bool(cfg.algo.compile.enabled),
            "decoupled_rssm": bool(wm_cfg.decoupled_rssm),
            "optimizers": {
                name: {k: v for k, v in getattr(cfg.algo, name).optimizer.items() if k in ("lr", "eps", "fused")}
                for name in ("world_model", "actor", "critic")
            },
        }
        result.update(
            {
                "peer": PEER,
                "obs": args.obs,
                "env": cfg.env.id + (" (64x64 RGB render)" if args.obs == "image" else " (state)"),
                "seconds_per_update": seconds,
                "median_seconds_per_update": statistics.median(seconds),
                # CPU time of the process (all its threads) per update: on a busy machine, far below
                # seconds_per_update x threads shows that the update waited for the cores
                "cpu_seconds_per_update": cpu_seconds,
                "updates": args.updates,
                "warmup": args.warmup,
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
                "params": {
                    "world_model": count(world_model),
                    "actor": count(actor),
                    "critic": count(critic),
                },
                "dims": dims,
                "hydra_overrides": hydra_overrides,
            }
        )

    fabric.launch(run, cfg)
    real_stdout.write(json.dumps(result) + "\n")
    real_stdout.flush()


if __name__ == "__main__":
    main()
