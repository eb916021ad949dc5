"""benchmarks/memory.py and memory_probe.py: the verdict "uses memory" against the memoryless
references, a tiny run through POPGym (a refused family listed, not dropped), and the probe's
held-out episodes and reward R²."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import memory

FAST = ["+debug", "run.prefill=50", "run.train_ratio=8", "run.report_every=0"]


def run(variant: str, task: str, finals: list[float], steps: int = 100) -> list[dict]:
    return [{"task": task, "variant": variant, "seed": seed, "curve": [(0, -0.5, 0.0), (steps, value, 0.0)],
             "final_step": steps} for seed, value in enumerate(finals)]


def test_a_variant_uses_memory_only_when_it_beats_the_reference_by_more_than_the_spread():
    args = memory.parse_args(["--tasks", "RepeatFirstEasy", "--variants", "default", "--variant", "ctx",
                              "batch_length=64", "--variant", "short", "batch_length=8", "--steps", "100"])
    runs = (run("default", "RepeatFirstEasy", [-0.6, 0.2])     # mean -0.2: 0.275 above, spread 0.8
            + run("ctx", "RepeatFirstEasy", [0.96, 0.9])       # mean 0.93: 1.4 above, spread 0.06
            + run("short", "RepeatFirstEasy", [0.9], steps=60))  # stopped early: no final value
    ppo = lambda value: {"curve": [(0, -0.5, 0.0), (100, value, 0.0)], "wall_s": 1.0, "hyperparameters": ""}
    refs = [{"task": "RepeatFirstEasy", "seed": 0, "constant": {"action": 3, "return": -0.5, "episodes": 2},
             "ppo": ppo(-0.5)}, {"task": "RepeatFirstEasy", "seed": 1, "ppo": ppo(-0.45)}]
    task = memory.summarise(args, runs, refs)["tasks"]["RepeatFirstEasy"]
    assert task["reference"] == pytest.approx(-0.475)  # the better of constant (-0.5) and PPO's mean
    default, ctx, short = (task["variants"][n] for n in ("default", "ctx", "short"))
    assert default["mean"] == pytest.approx(-0.2) and default["uses_memory"] is False
    assert ctx["spread"] == pytest.approx(0.06) and ctx["uses_memory"] is True
    assert "mean" not in short and short["steps_run"] == [60]
    table = memory.markdown(memory.summarise(args, runs, refs))
    assert "✓ 0.93 (0.96, 0.90)" in table and "-0.20 (-0.60, 0.20)" in table and "not run to 100 (at 60)" in table


def test_a_variant_item_that_is_neither_a_preset_nor_an_override_is_refused():
    with pytest.raises(SystemExit):
        memory.parse_args(["--variant", "mine", "batch_length"])
    with pytest.raises(SystemExit):
        memory.parse_args(["--variants", "default", "--variant", "default", "batch_length=8"])  # taken


def test_a_tiny_benchmark_trains_evaluates_and_lists_a_refused_family(tmp_path):
    pytest.importorskip("popgym")
    argv = ["--tasks", "RepeatFirstEasy", "--seeds", "0", "--steps", "200", "--eval-every", "100",
            "--eval-episodes", "1", "--constant-episodes", "2", "--no-ppo", "--parallel", "1",
            "--variants", "tdmpc2", "--variant", "tiny", *FAST,
            "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--tag", "t"]
    assert memory.main(argv) == 0
    summary = json.loads((tmp_path / "out" / "memory_t.json").read_text())
    task = summary["tasks"]["RepeatFirstEasy"]
    assert "Box" in task["variants"]["tdmpc2"]["refused"]  # TD-MPC2 takes continuous actions only
    assert abs(task["constant"]["return"]) <= 1.0 + 1e-6 and task["ppo_finals"] == []
    (tiny,) = [r for r in summary["runs"] if r["variant"] == "tiny"]
    assert [s for s, _, _ in tiny["curve"]] == [0, 100, 200]
    assert abs(task["variants"]["tiny"]["mean"]) <= 1.0 + 1e-6  # POPGym: returns in [-1, 1] (float32 sums)
    table = (tmp_path / "out" / "memory_t.md").read_text()
    assert "refused: agent.family tdmpc2" in table and "no recurrence" in table
    assert memory.main(argv) == 0  # a second call reuses the finished runs and the cached references


def test_the_probe_stacks_whole_episodes_and_refuses_ragged_ones():
    import memory_probe

    first = np.zeros(12, bool)
    first[[0, 4, 8]] = True
    stream = {"is_first": first, "reward": np.arange(12.0)}
    episodes = memory_probe.episodes_of(stream)
    assert episodes["reward"].tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]  # the unfinished last one is left out
    first[9] = True
    with pytest.raises(SystemExit):
        memory_probe.episodes_of(stream)


def test_episode_start_windows_begin_at_first_steps_that_leave_room_for_a_whole_window():
    import memory_probe

    first = np.zeros(12, bool)
    first[[0, 4, 8]] = True
    stream = {"is_first": first, "step": np.arange(12)}
    batch = memory_probe.windows(stream, 50, 3, np.random.default_rng(0), from_episode_start=True)
    assert set(batch["step"][:, 0].tolist()) == {0, 4, 8} and batch["is_first"][:, 0].all()
    batch = memory_probe.windows(stream, 50, 5, np.random.default_rng(0), from_episode_start=True)
    assert set(batch["step"][:, 0].tolist()) == {0, 4}  # from step 8 a window of 5 would run off the stream


def test_a_tiny_probe_reports_the_reward_r2_by_step(tmp_path):
    pytest.importorskip("popgym")
    import memory_probe

    argv = ["--task", "RepeatFirstEasy", "--steps", "300", "--episodes", "3", "--updates", "2", "--eval-every", "1",
            "--variant", "tiny", "+debug", "--out", str(tmp_path)]
    assert memory_probe.main(argv) == 0
    summary = json.loads((tmp_path / "memory_probe_RepeatFirstEasy.json").read_text())
    (result,) = summary["variants"]["tiny"]
    assert [c["update"] for c in result["curve"]] == [1, 2]
    assert set(result["curve"][-1]) >= {"all", "1-10", "11-30", "31-", "r2_mean", "cue 1-10", "cue 31-"}
    assert all(np.isfinite(result["curve"][-1][k]) and result["curve"][-1][k] <= 1.0 for k in ("all", "31-"))


def test_the_cue_probe_finds_a_cue_h_holds_and_scores_chance_where_h_forgot_it():
    import memory_probe

    generator = torch.Generator().manual_seed(0)
    cue = torch.randint(0, 4, (200,), generator=generator)  # (E,) the first card of each episode
    deter = torch.randn(200, 51, 8, generator=generator)  # (E, L, D) noise ...
    deter[:, :11, :4] += 3.0 * torch.nn.functional.one_hot(cue, 4)[:, None].float()  # ... holding the cue to step 10
    result = memory_probe.cue_memory(deter, cue, 4)
    assert result["cue 1-10"] > 0.95
    assert abs(result["cue 11-30"] - 0.25) < 0.12 and abs(result["cue 31-"] - 0.25) < 0.12  # chance: 1/4


def test_the_step_one_readout_splits_the_heads_belief_by_right_and_wrong_answers():
    import memory_probe

    from reverie.nn.distributions import TwoHot

    reward = torch.full((4, 5), 0.02)  # (E, L) episodes 0, 1 answered right at step 1, episodes 2, 3 wrong
    reward[2:, 1] = -0.02
    p_positive = torch.full((4, 5), 0.5)
    p_positive[:2, 1], p_positive[2:, 1] = 0.9, 0.2  # the head's P(r > 0) at step 1
    probs = torch.stack([1 - p_positive, torch.zeros_like(p_positive), p_positive], -1)  # bins -1, 0, 1
    head = TwoHot(probs.log(), torch.tensor([-1.0, 0.0, 1.0]))
    result = memory_probe.reward_memory(head, reward)
    assert result["p_right_1"] == pytest.approx(0.9) and result["p_wrong_1"] == pytest.approx(0.2)
