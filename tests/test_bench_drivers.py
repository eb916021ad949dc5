"""The benchmark drivers' bookkeeping, without training: which runs `benchmarks/learning.py`
reuses, extends or retrains, and how `benchmarks/family.py` keeps an action-repeating preset on the
same env-step budget as the others."""

import json
import sys
from pathlib import Path

import pytest

from reverie import api
from reverie import config as config_lib
from reverie.errors import UserError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import family  # noqa: E402
import learning  # noqa: E402

OVERRIDES = ["run.prefill=100", "run.eval_every=200"]


def fake_run(runs_dir: Path, steps_done: int, overrides=OVERRIDES, returncode=0, timed_out=False) -> Path:
    """A logdir as a finished `reverie train` leaves it: config, one checkpoint, the timing record."""
    logdir = runs_dir / "CartPole-v1" / "seed0"
    (logdir / "checkpoints").mkdir(parents=True)
    config_lib.save(api.build_config("CartPole-v1", ["debug"], overrides, logdir, steps_done, 0), logdir / "config.yaml")
    (logdir / "checkpoints" / f"ckpt_{steps_done:09d}.pt").write_bytes(b"")
    record = {"command": ["reverie"], "started_at": "t", "wall_s": 5.0, "returncode": returncode,
              "timed_out": timed_out, "eval_times": {"0": 1.0}, "final_eval_time": 5.0}
    (logdir / learning.RECORD).write_text(json.dumps(record))
    return logdir


def plan(runs_dir: Path, steps: int, *flags: str, overrides=OVERRIDES) -> str:
    args = learning.parse_args(["--seeds", "0", "--steps", str(steps), "--preset", "debug", "--threshold", "475",
                                "--runs-dir", str(runs_dir), *flags, *overrides])
    return learning.plan_seed(args, 0)[2]


def test_a_finished_run_is_reused_and_a_shorter_one_extended_only_when_asked(tmp_path):
    fake_run(tmp_path, 400)
    assert plan(tmp_path, 400) == "reuse"
    assert plan(tmp_path, 300) == "reuse"
    assert plan(tmp_path, 800) == "train"
    assert plan(tmp_path, 800, "--extend") == "extend"
    assert plan(tmp_path, 800, "--extend", "--rerun") == "train"


def test_report_tabulates_runs_as_they_are_and_needs_one(tmp_path):
    fake_run(tmp_path, 400)
    assert plan(tmp_path, 800, "--report") == "reuse"
    with pytest.raises(UserError, match="holds no run"):
        plan(tmp_path / "elsewhere", 800, "--report")


def test_a_failed_run_is_not_extended(tmp_path):
    fake_run(tmp_path, 400, returncode=1)
    assert plan(tmp_path, 800, "--extend") == "train"


def test_a_run_stopped_at_max_minutes_is_extended_from_its_checkpoint_only_when_asked(tmp_path):
    fake_run(tmp_path, 400, returncode=-9, timed_out=True)
    assert plan(tmp_path, 800) == "train"
    assert plan(tmp_path, 800, "--extend") == "extend"


def test_extending_a_run_of_another_config_is_refused(tmp_path):
    fake_run(tmp_path, 400)
    with pytest.raises(UserError, match="run.prefill"):
        plan(tmp_path, 800, "--extend", overrides=["run.prefill=50", "run.eval_every=200"])


@pytest.fixture
def learning_commands(monkeypatch):
    """family.py's learning.py commands by preset, with learning.py itself replaced by a stub."""
    commands = {}

    def record(command, **kwargs):
        preset = command[command.index("--preset") + 1]
        commands[preset] = command
        (Path(command[command.index("--out") + 1]) / f"learning_Pendulum-v1_{preset}.json").write_text("{}")
        return type("Done", (), {"returncode": 0})()

    monkeypatch.setattr(family.subprocess, "run", record)
    return commands


def test_action_repeat_keeps_the_env_step_budget(tmp_path, learning_commands):
    args = family.parse_args(["--steps", "50000", "--out", str(tmp_path), "--runs-dir", str(tmp_path / "runs"),
                              "run.train_ratio=16"])
    family.run_preset(args, "planet")
    command = learning_commands["planet"]
    assert family.ACTION_REPEAT["planet"] == 4
    assert command[command.index("--steps") + 1] == "12500"  # agent steps: 50K env steps / 4
    assert command[command.index("--runs-dir") + 1] == str(tmp_path / "runs" / "planet_repeat4")
    # Later overrides win: eval every 2500 / 4 agent steps, train ratio 16 · 4 samples per agent step.
    assert command[-3:] == ["env.action_repeat=4", "run.eval_every=625", "run.train_ratio=64"]


def test_preset_scoped_overrides_reach_only_their_preset(tmp_path, learning_commands):
    args = family.parse_args(["--presets", "planet", "dreamerv1", "--out", str(tmp_path), "--runs-dir",
                              str(tmp_path / "runs"), "planet:run.train_ratio=128", "run.prefill=500"])
    for preset in args.presets:
        family.run_preset(args, preset)
    planet, dreamerv1 = learning_commands["planet"], learning_commands["dreamerv1"]
    assert planet[-1] == "run.train_ratio=512"  # 128 per agent step, × the repeat of 4
    assert "run.prefill=500" in planet and "run.prefill=500" in dreamerv1
    assert not any(arg.startswith("run.train_ratio=128") or arg.startswith("planet:") for arg in dreamerv1)
    with pytest.raises(SystemExit):
        family.parse_args(["--presets", "dreamerv1", "planet:run.train_ratio=128"])


def test_rows_of_an_action_repeating_preset_are_in_env_steps():
    seed = {"seed": 0, "final_step": 12_500, "steps_to_threshold": 5_000, "last3_eval_returns": [-300.0],
            "updates": 10, "wall_s": 60.0, "eval_curve": [[0, -1200.0, 5.0], [5_000, -300.0, 2.0]]}
    result = {"config": {"resolved": {"env": {"action_repeat": 4}}}, "seeds": [seed]}
    rows = family.rows_of({"planet": result})
    assert rows[0]["final_step"] == 50_000 and rows[0]["steps_to_threshold"] == 20_000
    assert [point[0] for point in rows[0]["eval_curve"]] == [0, 20_000]
