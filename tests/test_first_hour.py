"""A new user's first hour: resume writes where it is told, says what it does, and refuses what it
cannot honour; every user error is one line and exit code 2; smoke runs are quick; the CLI's
help, version and checks."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
import torch

import reverie
from reverie import cli
from reverie import config as config_lib
from reverie.api import build_config
from reverie.errors import CheckpointError, ReverieWarning, UserError, plural
from reverie.logging import read_metrics
from reverie.run import checkpoint as ckpt
from reverie.run.train import Trainer

ENV = "CartPole-v1"
FAST = ["run.prefill=50", "run.report_every=0", "run.threads=1", "run.log_every=0", "run.eval_final=false"]


def train_cli(*args: str) -> int:
    return cli.main(["train", "--no-progress", *args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One finished 120-step debug run, copied by the tests that need one."""
    logdir = tmp_path_factory.mktemp("trained") / "run"
    assert train_cli("--env", ENV, "--preset", "debug", "--logdir", str(logdir), "--steps", "120", *FAST) == 0
    return logdir


def copy_run(trained: Path, to: Path) -> Path:
    shutil.copytree(trained, to)
    return to


def files_of(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def error_lines(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


# --------------------------------------------------------------------------------------------
# 1. Resume writes only into the logdir given


def test_a_copied_run_resumes_in_the_copy_and_leaves_the_original_alone(trained, tmp_path):
    original = copy_run(trained, tmp_path / "a")
    before = files_of(original)
    copy = copy_run(original, tmp_path / "b")
    assert train_cli("--logdir", str(copy), "--steps", "160") == 0
    assert files_of(original) == before
    assert [p.name for p in ckpt.list_checkpoints(copy / "checkpoints")][-1] == "ckpt_000000160.pt"
    assert reverie.evaluate(copy, episodes=1)["episodes"] == 1
    assert (copy / "eval.json").exists() and not (original / "eval.json").exists()


def test_an_absolute_logdir_resumes_from_another_working_directory(trained, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    copy_run(trained, work / "runs" / "x")  # its config.yaml names a relative logdir of another folder
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert train_cli("--logdir", str(work / "runs" / "x"), "--steps", "150") == 0
    out = capsys.readouterr().out
    assert f"resumed {work / 'runs' / 'x'} with its saved config at step 120" in out
    assert newest(work / "runs" / "x") == 150
    assert not any(elsewhere.iterdir()), "the run wrote outside its logdir"


def newest(logdir: Path) -> int:
    return int(ckpt.list_checkpoints(logdir / "checkpoints")[-1].stem.split("_")[1])


# --------------------------------------------------------------------------------------------
# 2. Resume says what it does and refuses what it cannot honour


def test_steps_below_the_current_step_is_one_line_exit_0_and_nothing_rewritten(trained, tmp_path, capsys):
    run = copy_run(trained, tmp_path / "run")
    before = files_of(run)
    capsys.readouterr()
    assert train_cli("--logdir", str(run), "--steps", "100") == 0
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        f"reverie: {run} is already at step 120 ≥ 100: nothing to do (ask for more steps to train on)"]
    assert captured.out == ""
    assert files_of(run) == before


def test_the_python_api_resume_names_what_it_ignores_and_takes_runtime_keys(trained, tmp_path, capsys):
    run = copy_run(trained, tmp_path / "run")
    with pytest.raises(UserError, match="unknown config key 'run.thread'"):
        reverie.train(ENV, logdir=run, overrides={"run.thread": 2}, progress=False)
    with pytest.raises(UserError, match="unknown preset 'tiny'"):
        reverie.train(ENV, logdir=run, presets=["tiny"], progress=False)
    capsys.readouterr()
    result = reverie.train("Pendulum-v1", logdir=run, presets="size12m", steps=130, seed=5,
                           overrides={"optim.lr": 0.5, "run.threads": 2}, progress=False)
    err = capsys.readouterr().err
    assert result["step"] == 130
    assert "ignored: preset size12m, env Pendulum-v1 (the run's is CartPole-v1), seed 5 (the run's is 0), " \
           "optim.lr=0.5" in err
    saved = config_lib.load(run / "config.yaml")
    assert saved.run.threads == 2 and saved.optim.lr != 0.5 and saved.env.id == ENV and saved.logdir == str(run)


def test_a_plain_resume_gives_no_ignored_note(trained, tmp_path, capsys):
    run = copy_run(trained, tmp_path / "run")
    capsys.readouterr()
    assert train_cli("--logdir", str(run), "--steps", "130", "run.threads=1") == 0
    assert "ignored" not in capsys.readouterr().err


def test_the_default_logdir_of_an_env_says_it_resumes(trained, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    copy_run(trained, tmp_path / "runs" / ENV)
    capsys.readouterr()
    result = reverie.train(ENV, steps=130, progress=False)
    assert result["logdir"] == str(Path("runs") / ENV) and result["step"] == 130
    assert f"resuming {Path('runs') / ENV}, the default logdir for this env" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# 3. Every user error is one line and exit 2, and leaves no empty logdir


@pytest.mark.parametrize("device", ["gpu", "cuda:7", "cuda"])
def test_a_bad_device_is_one_line_exit_2_and_no_logdir(tmp_path, capsys, device):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    logdir = tmp_path / "run"
    assert train_cli("--env", ENV, "--preset", "debug", "--logdir", str(logdir), f"run.device={device}") == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith(f"reverie: error: run.device '{device}'"), lines
    assert not logdir.exists()


def test_a_malformed_flag_value_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--steps", "abc"])
    assert exit_info.value.code == 2
    assert error_lines(capsys) == [
        "reverie: error: argument --steps: invalid int value: 'abc' (see reverie train --help)"]


def test_every_checkpoint_unreadable_is_named_as_such(trained, tmp_path, capsys):
    run = copy_run(trained, tmp_path / "run")
    for path in ckpt.list_checkpoints(run / "checkpoints"):
        path.write_bytes(b"not a checkpoint")
    count = len(ckpt.list_checkpoints(run / "checkpoints"))
    assert train_cli("--logdir", str(run), "--steps", "200") == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and "in " + str(run / "checkpoints") in lines[0], lines
    assert (f"all {count} checkpoints" if count > 1 else "the only checkpoint") in lines[0]
    assert "unreadable" in lines[0] and len(ckpt.list_checkpoints(run / "checkpoints")) == count
    with pytest.raises(CheckpointError, match="unreadable"):
        reverie.load(run)


def test_an_unreadable_checkpoint_is_moved_aside_with_a_one_line_warning(tmp_path):
    folder = tmp_path / "checkpoints"
    ckpt.save_checkpoint(folder, 100, {"x": torch.ones(2)})
    ckpt.save_checkpoint(folder, 200, {"x": torch.zeros(2)})
    (folder / "ckpt_000000200.pt").write_bytes(b"torn")
    with pytest.warns(ReverieWarning) as record:
        path, payload = ckpt.load_latest_checkpoint(folder)
    assert path.name == "ckpt_000000100.pt" and payload["x"].sum() == 2
    assert (folder / "corrupt" / "ckpt_000000200.pt").read_bytes() == b"torn"
    assert [p.name for p in ckpt.list_checkpoints(folder)] == ["ckpt_000000100.pt"]
    line = warnings.formatwarning(record[0].message, record[0].category, record[0].filename, record[0].lineno)
    assert line.startswith("reverie: warning: checkpoint ckpt_000000200.pt is unreadable (") and line.endswith(
        f"); moved to {folder / 'corrupt' / 'ckpt_000000200.pt'} and resumed from ckpt_000000100.pt\n")
    assert line.count("\n") == 1  # no source line


# --------------------------------------------------------------------------------------------
# 5. Smoke runs are smoke runs


@pytest.mark.parametrize("env", ["dmc:walker_walk", "atari:pong", "crafter", ENV])
def test_debug_is_at_most_one_update_per_policy_step_on_every_suite(env):
    cfg = build_config(env, ["debug"])
    assert cfg.run.train_ratio / (cfg.batch_size * cfg.batch_length) <= 1
    assert cfg.run.eval_final and cfg.run.eval_episodes >= 1


def test_a_debug_run_evaluates_at_the_end(tmp_path):
    result = reverie.train(ENV, logdir=tmp_path / "run", presets="debug", steps=80,
                           overrides=["run.prefill=50", "run.report_every=0", "run.threads=1"], progress=False)
    assert result["eval"]["episodes"] == 2
    assert [r for r in read_metrics(tmp_path / "run") if "eval/return_mean" in r][-1]["step"] == 80


# --------------------------------------------------------------------------------------------
# 4. Ctrl-C and the updates owed by recovered steps


def test_ctrl_c_writes_the_last_metrics_row_and_nothing_after_the_interrupted_line(tmp_path, monkeypatch, capsys):
    original = Trainer.train_due

    def interrupt_at_90(self):
        if self.counters.step >= 90:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "train_due", interrupt_at_90)
    logdir = tmp_path / "run"
    args = ["--env", ENV, "--preset", "debug", "--logdir", str(logdir), "run.prefill=50", "run.report_every=0",
            "run.threads=1", "run.log_every=1000"]
    assert train_cli(*args) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"reverie: interrupted at step 90; checkpoint written: {logdir / 'checkpoints'}/ckpt_000000090.pt"
    rows = read_metrics(logdir)
    assert rows[-1]["step"] == 90 and rows[-1]["updates"] > 0


def test_the_updates_owed_by_recovered_steps_run_with_the_bar_following_them(tmp_path, monkeypatch):
    logdir = tmp_path / "run"
    overrides = ["run.prefill=50", "run.report_every=0", "run.threads=1", "replay.chunk_length=20",
                 "run.eval_final=false"]
    reverie.train(ENV, logdir=logdir, presets="debug", steps=100, overrides=overrides, progress=False)
    original = Trainer.train_due

    def crash_at_150(self):
        if self.counters.step >= 150:
            raise SystemError("simulated crash")
        return original(self)

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "train_due", crash_at_150)
        with pytest.raises(SystemError):
            reverie.train(ENV, logdir=logdir, steps=200, progress=False)
    shown: list[tuple[int, int]] = []
    from reverie import logging as reverie_logging

    update = reverie_logging.Progress.update

    def record(self, step, stats=None):
        if stats and "updates" in stats:
            shown.append((step, int(stats["updates"])))
        return update(self, step, stats)

    monkeypatch.setattr(reverie_logging.Progress, "update", record)
    reverie.train(ENV, logdir=logdir, steps=200, progress=False)
    at_recovered = [updates for step, updates in shown if step == 140]  # chunks of 20 up to 140
    assert len(at_recovered) >= 30 and at_recovered == sorted(at_recovered), at_recovered[:5]


# --------------------------------------------------------------------------------------------
# 6. CLI and docs polish


def test_every_flag_has_help_text():
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"reverie {name} {action.option_strings or action.dest} has no help"


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"reverie {reverie.__version__}"


def test_config_checks_the_env_and_lists_the_presets_applied(capsys):
    assert cli.main(["config", "--env", "NoSuchEnv-v9"]) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and "NoSuchEnv-v9" in lines[0]
    assert cli.main(["config", "--env", ENV, "--preset", "debug"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == \
        "# presets applied in order: dreamerv3, classic, debug; then the overrides"


def test_a_size_preset_overridden_by_a_later_suite_preset_is_warned():
    with pytest.warns(ReverieWarning, match="suite preset 'classic' overrides .* of the size preset 'debug'"):
        assert cli.main(["config", "--preset", "debug", "--preset", "classic"]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cli.main(["config", "--preset", "classic", "--preset", "debug"]) == 0


def test_eval_flags_are_checked(trained, capsys):
    assert cli.main(["eval", "--logdir", str(trained), "--video-episodes", "2"]) == 2
    assert error_lines(capsys) == ["reverie: error: --video-episodes needs --video; add --video or drop "
                                   "--video-episodes"]
    assert cli.main(["eval", "--logdir", str(trained), "--device", "gpu"]) == 2
    assert error_lines(capsys) == ["reverie: error: device 'gpu' is not a device; use auto, cpu, cuda, cuda:N "
                                   "or mps"]


def test_eval_shows_each_episode_and_takes_device_and_threads(trained, tmp_path, capsys):
    run = copy_run(trained, tmp_path / "run")
    assert cli.main(["eval", "--logdir", str(run), "--episodes", "2", "--device", "cpu", "--threads", "1"]) == 0
    captured = capsys.readouterr()
    progress = [line for line in captured.err.splitlines() if line.startswith("episode ")]
    assert [line.split(":")[0] for line in progress] == ["episode 1/2", "episode 2/2"]
    assert "over 2 episodes" in captured.out


def test_python_api_errors_name_no_cli_flags(trained, tmp_path):
    for call in (lambda: build_config(ENV, steps=0),
                 lambda: reverie.load(tmp_path / "nothing"),
                 lambda: reverie.evaluate(trained, episodes=0),
                 lambda: reverie.load(trained).evaluate(1, video=tmp_path, video_episodes=0)):
        with pytest.raises(UserError) as error:
            call()
        assert "--" not in str(error.value), str(error.value)


def test_presets_as_one_string_and_messages_in_good_grammar():
    assert build_config(ENV, "debug").batch_size == build_config(ENV, ["debug"]).batch_size == 4
    assert (plural(1, "update"), plural(2, "update"), plural(1060, "episode")) == \
        ("1 update", "2 updates", "1,060 episodes")
    with pytest.raises(UserError, match=r"model.rssm.deter \(100\) must be divisible by model.rssm.blocks \(8"):
        build_config(ENV, overrides={"model.rssm.deter": 100, "model.rssm.blocks": 8})


def test_steps_inside_the_prefill_say_no_update_will_run(tmp_path, capsys):
    assert train_cli("--env", ENV, "--preset", "debug", "--logdir", str(tmp_path / "run"), "--steps", "40",
                     "run.prefill=50", "run.report_every=0", "run.eval_final=false") == 0
    out = capsys.readouterr().out
    assert "inside the random prefill of 50 steps (run.prefill): no update will run" in out
    assert "1 update per policy step" in out


def test_the_readme_python_example_runs_as_written_and_records_what_the_readme_says(tmp_path):
    import re
    import subprocess
    import sys

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    example = re.search(r"```python\n(import gymnasium as gym\n.*?class Corridor.*?)```", readme, re.S).group(1)
    (tmp_path / "corridor_example.py").write_text(example)
    done = subprocess.run([sys.executable, "corridor_example.py"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "one episode:" in done.stdout and "'return_mean'" in done.stdout
    assert "`env.id: object:<class or function name>` in `config.yaml` (`object:Corridor` here)" in readme
    assert config_lib.load(tmp_path / "runs" / "corridor" / "config.yaml").env.id == "object:Corridor"


def test_a_second_training_process_on_a_live_logdir_is_refused_and_changes_nothing(trained, tmp_path, capsys):
    import subprocess
    import sys

    run = copy_run(trained, tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
                               str(run / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = files_of(run)
        capsys.readouterr()
        assert train_cli("--logdir", str(run), "--steps", "200") == 2
        assert error_lines(capsys) == [f"reverie: error: {run} is being trained by another process; wait for it "
                                       "to finish or stop it, or use another logdir"]
        assert files_of(run) == before
    finally:
        holder.kill()
        holder.wait()
    assert train_cli("--logdir", str(run), "--steps", "130") == 0  # the lock went with its process
