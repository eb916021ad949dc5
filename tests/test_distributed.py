"""Data-parallel training (reverie.distributed) on the CPU: gloo, 2 ranks, each a spawned process.

The collectives against hand-computed values; the all-reduced gradient of two ranks with B/2
sequences each against the single process's gradient on all B (Dreamer, with the percentile return
normaliser over the whole batch, and MuZero); the weights identical on both ranks after a short run
of every family; a 2-rank run resumed from its logdir continuing both shards; the errors a user gets.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from ranks import run_ranks, sample_modes

from reverie import config as C
from reverie import distributed
from reverie.agents import make_agent
from reverie.cli import main
from reverie.envs import make_env
from reverie.errors import UserError
from reverie.run.train import Trainer, per_rank_config

CPU = torch.device("cpu")


# ------------------------------------------------------------------------------ collectives
def collectives(rank: int) -> dict:
    world = distributed.join(CPU)
    param = torch.nn.Parameter(torch.zeros(3))
    param.grad = torch.full((3,), 2.0 * rank)  # ranks 0, 1: 0 and 2 → mean 1
    unused = torch.nn.Parameter(torch.zeros(2))  # no gradient: left out
    distributed.average_gradients([param, unused])
    out = {"world": (world.rank, world.size, world.main),
           "rows": distributed.gather_rows(torch.tensor([[rank + 1.0, 10.0 * (rank + 1)]])),
           "all_true": [bool(distributed.all_true(torch.tensor(flag))) for flag in (True, rank == 0)],
           "min": distributed.all_min([rank, 5 - rank]), "grad": param.grad, "unused": unused.grad}
    distributed.leave()
    return out


def test_the_collectives_on_two_ranks(tmp_path):
    first, second = run_ranks(collectives, 2, tmp_path)
    assert first["world"] == (0, 2, True) and second["world"] == (1, 2, False)
    for out in (first, second):
        assert out["rows"].tolist() == [[1.0, 10.0], [2.0, 20.0]]  # rank order
        assert out["all_true"] == [True, False] and out["min"] == [0, 4]
        assert out["grad"].tolist() == [1.0, 1.0, 1.0] and out["unused"] is None


def test_a_world_of_one_is_the_single_process():
    x = torch.arange(6.0).reshape(3, 2)
    assert distributed.gather_rows(x) is x and distributed.all_min([3, 1]) == [3, 1]
    assert distributed.current() == distributed.World() and distributed.World().seed(7) == 7


# ------------------------------------------------------------------------------ one update, split
FAMILIES = {"dreamer": (["debug"], []),
            "muzero": (["muzero"], ["muzero.latent_dim=16", "muzero.mlp_dim=16", "muzero.projection_dim=16",
                                    "muzero.simulations=4", "batch_size=8"])}


def family_config(family: str) -> C.Config:
    presets, overrides = FAMILIES[family]
    return C.make_config(C.compose_presets(presets), overrides)


def env_batch(cfg: C.Config, agent, seed: int = 0) -> dict[str, np.ndarray]:
    """A (B, C + T) batch of real CartPole steps under a random policy; stored replay fields uniform."""
    env = make_env("CartPole-v1", cfg.env, seed)
    rng = np.random.default_rng(seed)
    B, T = cfg.batch_size, agent.context_length + agent.sequence_length
    rows, step = [], env.reset()
    for _ in range(B * T):
        action = env.act_space.sample_random(rng, 1)[0]
        rows.append({**step, "action": action})
        step = env.reset() if step["is_last"] else env.step(action)
    batch = {k: np.stack([r[k] for r in rows]).reshape(B, T, *np.shape(rows[0][k])) for k in rows[0]}
    for key, field in agent.replay_fields.items():
        batch[key] = np.full((B, T, *field.shape), 1.0 / field.shape[-1], field.dtype)
    return batch


def one_update(rank: int, family: str) -> dict:
    """Rank r's gradients after one update on its share of the batch (all of it in a world of one)."""
    sample_modes()
    world = distributed.join(CPU)
    cfg = family_config(family)
    env = make_env("CartPole-v1", cfg.env, 0)
    torch.manual_seed(0)
    agent = make_agent(env.obs_space, env.act_space, per_rank_config(cfg, world))
    batch = env_batch(cfg, agent)
    share = cfg.batch_size // world.size
    metrics = agent.train_step({k: v[rank * share:(rank + 1) * share] for k, v in batch.items()})
    grads = {name: p.grad.clone() for name, p in agent.named_parameters() if p.grad is not None}
    distributed.leave()
    return {"grads": grads, "nonfinite": float(metrics["train/nonfinite"])}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_two_ranks_with_half_the_batch_each_give_the_gradient_of_the_whole_batch(family, tmp_path):
    single, = run_ranks(one_update, 1, tmp_path / "single", family)
    first, second = run_ranks(one_update, 2, tmp_path / "two", family)
    assert single["nonfinite"] == first["nonfinite"] == 0.0
    assert single["grads"].keys() == first["grads"].keys() == second["grads"].keys()
    assert len(single["grads"]) > 10
    for name, grad in single["grads"].items():
        assert torch.equal(first["grads"][name], second["grads"][name]), name  # the same reduced gradient
        torch.testing.assert_close(first["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_a_batch_that_does_not_split_over_the_ranks_is_refused():
    cfg = family_config("dreamer")
    with pytest.raises(UserError, match="batch_size 4 does not split over 3 ranks"):
        per_rank_config(cfg, distributed.World(0, 3))


# ------------------------------------------------------------------------------ short runs
QUIET = ["run.eval_every=0", "run.eval_episodes=1", "run.report_every=0", "env.num_envs=1", "env.parallel=false",
         "replay.chunk_length=50"]
RUNS = {"dreamer": (["debug"], 200, QUIET),  # (presets, steps, overrides)
        "muzero": (["muzero"], 160, [*FAMILIES["muzero"][1], *QUIET, "run.train_ratio=88"]),
        "tdmpc2": (["tdmpc2"], 120, [*QUIET, "run.prefill=40", "run.train_ratio=64", "tdmpc2.latent_dim=32",
                                     "tdmpc2.mlp_dim=32", "tdmpc2.enc_dim=32", "batch_size=8",
                                     "behavior.planner.candidates=32", "behavior.planner.top_k=4",
                                     "behavior.planner.policy_samples=4", "behavior.planner.iterations=2"])}


def short_run(rank: int, family: str, logdir: str, steps: int) -> dict:
    presets, _, overrides = RUNS[family]
    env = "Pendulum-v1" if family == "tdmpc2" else "CartPole-v1"
    cfg = C.make_config(C.compose_presets(presets), [*overrides, f"logdir={logdir}", f"run.steps={steps}",
                                                     "run.threads=1", f"env.id={env}"])
    trainer = Trainer(cfg, progress=False)
    try:
        result = trainer.run()
        weights = {k: v.clone() for k, v in torch.nn.Module.state_dict(trainer.agent).items()}
        return {"result": result, "weights": weights, "replay_added": trainer.replay.added,
                "counters": trainer.counters.state_dict()}
    finally:
        trainer.close()
        distributed.leave()


@pytest.mark.parametrize("family", sorted(RUNS))
def test_after_a_short_run_both_ranks_hold_the_same_weights(family, tmp_path):
    steps = RUNS[family][1]
    first, second = run_ranks(short_run, 2, tmp_path / "ranks", family, str(tmp_path / "run"), steps)
    assert first["result"]["updates"] == second["result"]["updates"] > 0
    assert first["counters"]["step"] == second["counters"]["step"] == steps  # the job's steps
    assert first["replay_added"] == second["replay_added"] == steps // 2  # one env per rank: half each
    for name, tensor in first["weights"].items():
        assert torch.equal(tensor, second["weights"][name]), name
    assert np.isfinite(first["result"]["eval"]["return_mean"]) and second["result"]["eval"] == {}


def test_a_two_rank_run_resumes_from_its_logdir_and_continues_both_shards(tmp_path):
    logdir = tmp_path / "run"
    run_ranks(short_run, 2, tmp_path / "a", "dreamer", str(logdir), 200)
    rank1 = logdir / "ranks" / "1"
    assert (logdir / "checkpoints" / "ckpt_000000200.pt").is_file()
    assert (rank1 / "checkpoints" / "ckpt_000000200.pt").is_file()
    assert not (rank1 / "metrics.jsonl").exists() and not (rank1 / "config.yaml").exists()  # rank 0 writes those
    first, second = run_ranks(short_run, 2, tmp_path / "b", "dreamer", str(logdir), 400)
    assert first["counters"]["step"] == second["counters"]["step"] == 400
    assert first["replay_added"] == second["replay_added"] == 200  # each shard went on from its 100 steps
    for shard in (logdir, rank1):  # every step once on disk: chunks of 50 steps from 0 to 200 per shard
        chunks = sorted(p.name for p in (shard / "replay").glob("chunk_*.npz"))
        assert chunks == [f"chunk_{t:010d}_{t + 50:010d}.npz" for t in range(0, 200, 50)], shard
    steps = [json.loads(line)["step"] for line in (logdir / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 400


def test_a_two_rank_run_is_not_resumed_by_one_process(tmp_path, capsys):
    logdir = tmp_path / "run"
    run_ranks(short_run, 2, tmp_path / "a", "dreamer", str(logdir), 100)
    assert main(["train", "--logdir", str(logdir), "--steps", "200", "--no-progress"]) == 2
    assert "written by a run of 2 rank(s) and this one has 1: resume it with --nproc 2" in capsys.readouterr().err
    assert main(["train", "--logdir", str(logdir), "--steps", "200", "--nproc", "3"]) == 2
    assert "trained by 2 process(es): resume it with --nproc 2" in capsys.readouterr().err


def test_nproc_errors_are_one_line_and_leave_no_folder(tmp_path, capsys):
    logdir = tmp_path / "new"
    assert main(["train", "--preset", "debug", "--logdir", str(logdir), "--nproc", "3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "batch_size 4 does not split over 3 ranks" in err and not logdir.exists()
    assert main(["train", "--logdir", str(logdir), "--nproc", "0"]) == 2
    assert "--nproc must be ≥ 1" in capsys.readouterr().err


# ------------------------------------------------------------------------------ a rank that dies
def rank_pid(logdir: Path, rank: int) -> int | None:
    """The pid of rank `rank` of the job training in `logdir` (its command line names the logdir)."""
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(logdir).encode() in (proc / "cmdline").read_bytes() \
                    and f"\0RANK={rank}\0".encode() in b"\0" + (proc / "environ").read_bytes():
                return int(proc.name)
        except OSError:
            continue
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").is_file(), reason="finds the rank's process through /proc")
def test_a_killed_rank_stops_the_job_with_one_line_and_the_job_resumes(tmp_path):
    logdir = tmp_path / "run"
    command = [sys.executable, "-m", "reverie", "train", "--nproc", "2", "--preset", "debug", "--logdir", str(logdir),
               "--no-progress", "run.threads=1", "run.checkpoint_every=0.02", *QUIET]
    job = subprocess.Popen([*command, "--steps", "5000"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not list((logdir / "ranks" / "1" / "checkpoints").glob("ckpt_*.pt")):
        assert job.poll() is None and time.monotonic() < deadline, "the job ended before its first checkpoint"
        time.sleep(0.2)
    os.kill(rank_pid(logdir, 1), signal.SIGKILL)
    _, err = job.communicate(timeout=120)
    assert job.returncode == 1
    assert err.strip().splitlines()[-1] == ("reverie: error: rank 1 of 2 was killed by SIGKILL and the job stopped its "
                                            "other ranks; run the same command again to resume from the last checkpoint")
    done = subprocess.run([*command, "--steps", "600"], check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["step"] == 600
    for shard in (logdir, logdir / "ranks" / "1"):  # each step once on disk: contiguous chunks, none overlapping
        spans = sorted(tuple(int(t) for t in p.stem.split("_")[1:]) for p in (shard / "replay").glob("chunk_*.npz"))
        assert spans[0][0] == 0 and spans[-1][1] == 300 and all(a[1] == b[0] for a, b in itertools.pairwise(spans))
