"""Side-by-side learning run: the official JAX DreamerV3 (danijar/dreamerv3 e3f0224) against Reverie.

Three modes:
  --setup              create the official venv (/work/venv-official) and source tree
                       (/work/official-dreamerv3, from the fetched mirror), then exit;
  (default)            run the official `dreamerv3/main.py` on one thread and write its score curve
                       as JSON rows in learning.py's format (`eval_curve`: [policy_step, return, std]);
  --compare OURS_DIR   tabulate + plot that curve against a Reverie run's logdir (markdown + PNG in
                       benchmarks/results/), values per ../shared/TARGETS.md: per run the mean of the
                       points in the last 30K frames up to N frames (with the published curve beside).

Frames vs steps. Both sides count N *frames* (policy steps × action repeat). Reverie's `dmc_proprio`
preset uses action repeat 2 (as the published DreamerV3 curves); the official code's current default
for DMC is repeat 1, so this driver passes `--env.dmc.repeat 2` (change with --repeat): 100K frames
= 50K policy steps on both sides, and `run.train_ratio` (replayed steps per policy step) means the
same on both. The official logger multiplies its step by the repeat, so its scores.jsonl `step` is
frames; `--run.steps` counts policy steps. The official `train` script logs *training* episode
returns (`episode/score` in scores.jsonl, as in its published score files); Reverie logs both its
separate eval episodes (`eval/return_mean`) and training episodes (`episode/return`): the table shows both.

Deviations from the official defaults, all for a one-thread CPU: `--jax.platform cpu`, compute
dtype float32 (bf16 is 1.5–2× slower on CPU, see MACHINE-NOTES.md; --dtype bfloat16 restores it),
`--logger.outputs jsonl`, no nvidia-smi polling, and the DMC wrapper's per-step 64×64 render of
`log/image` (only logged, never seen by the agent or stored in replay) is skipped (--render keeps it).
One thread: taskset to one core, XLA_FLAGS="--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1" (re-applied after embodied.jax.internal.setup, which overwrites XLA_FLAGS).

The full side-by-side run (both one thread, concurrently, one seed each; 100K frames, batch 16×64,
train ratio 64, 16 envs each as in dmc_proprio, envs stepped in-process on both sides; the
official code counts the reset step, so its episode is 501 policy steps = 1002 frames):

    /work/venv/bin/python benchmarks/official_dreamerv3.py --setup
    taskset -c 0 /work/venv/bin/python benchmarks/learning.py --task dmc:cartpole_swingup \\
        --preset dmc_proprio --seeds 0 --steps 50000 --threshold 478 --max-minutes 600 \\
        --reference dmc_proprio/cartpole_swingup --runs-dir /tmp/reverie_bench_runs_side \\
        --out /tmp/side_ours run.threads=1 run.train_ratio=64 batch_size=16 batch_length=64 \\
        env.parallel=false run.eval_every=5000 run.eval_episodes=5 &
    /work/venv/bin/python benchmarks/official_dreamerv3.py --cpu 1 --frames 100000 --train-ratio 64 \\
        --envs 16 --seed 0 --logdir /tmp/official_runs/dmc_cartpole_swingup/seed0 &
    wait
    /work/venv/bin/python benchmarks/official_dreamerv3.py \\
        --logdir /tmp/official_runs/dmc_cartpole_swingup/seed0 \\
        --compare /tmp/reverie_bench_runs_side/dmc_cartpole_swingup/seed0

Smoke test (about 8 min on a loaded core): --frames 4000 --train-ratio 32 --envs 1
--logdir /tmp/official_smoke/seed0 -- --run.log_every=20, then --compare it with any Reverie logdir
(--frames 4000 there too; the table says how far each run got).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import reference_curves  # noqa: E402  (benchmarks/reference_curves.py: the TARGETS.md window mean)

VENV = Path("/work/venv-official")
SOURCE = Path("/work/official-dreamerv3")
MIRROR = Path("/work/.mirror/danijar+dreamerv3/repo")
COMMIT = "e3f0224"
PINS = ["jax[cpu]==0.4.33", "chex", "einops", "elements>=3.19.1", "granular>=0.20.3", "ninjax>=3.5.1",
        "numpy<2", "optax", "portal>=3.5.0", "scope>=0.4.4", "jaxtyping", "tqdm", "colored_traceback",
        "dm-control==1.0.50", "mujoco==3.17.0"]
ONE_THREAD_XLA = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"

# Runs inside the official venv: keep our XLA flags past internal.setup, optionally drop the render.
SHIM = r"""
import functools, os, runpy, sys
main = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(os.path.dirname(main)))
import embodied.jax.internal as internal
_setup = internal.setup
def setup(*args, **kwargs):
    ours = os.environ.get('XLA_FLAGS', '')
    _setup(*args, **kwargs)
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' ' + ours).strip()
internal.setup = setup
if os.environ.get('OFFICIAL_NO_RENDER') == '1':
    from embodied.envs import dmc
    _space, _step = dmc.DMC.__dict__['obs_space'].func, dmc.DMC.step
    def obs_space(self):
        spaces = _space(self)
        self._image or spaces.pop('log/image', None)
        return spaces
    def step(self, action):
        if self._image:
            return _step(self, action)
        obs = self._env.step(action)
        basic = ('is_first', 'is_last', 'is_terminal', 'reward')
        return obs if self._proprio else {k: obs[k] for k in basic}
    dmc.DMC.obs_space = property(functools.lru_cache(None)(obs_space))
    dmc.DMC.step = step
runpy.run_path(main, run_name='__main__')
"""


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--setup", action="store_true", help="create the venv and source tree, then exit")
    p.add_argument("--compare", metavar="OURS_RUN_DIR", help="a Reverie logdir to compare --logdir with")
    p.add_argument("--logdir", default="/tmp/official_runs/dmc_cartpole_swingup/seed0")
    p.add_argument("--task", default="dmc_cartpole_swingup", help="official task name")
    p.add_argument("--configs", nargs="+", default=["dmc_proprio", "size1m"])
    p.add_argument("--frames", type=int, default=100_000, help="env frames (policy steps × repeat)")
    p.add_argument("--repeat", type=int, default=2, help="DMC action repeat (Reverie dmc_proprio: 2)")
    p.add_argument("--train-ratio", type=float, default=64)
    p.add_argument("--envs", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--batch-length", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--render", action="store_true", help="keep the DMC wrapper's per-step render")
    p.add_argument("--cpu", default="1", help="core(s) for taskset ('' for none)")
    p.add_argument("--out", default=str(HERE / "results"), help="folder for the --compare table and plot")
    p.add_argument("--name", default=None, help="file stem for --compare (default from the task)")
    p.add_argument("extra", nargs="*", help="more official flags, e.g. --run.log_every=30 (after --)")
    return p.parse_args(argv)


def check_install() -> None:
    python, main = VENV / "bin" / "python", SOURCE / "dreamerv3" / "main.py"
    if not python.is_file():
        sys.exit(f"official_dreamerv3.py: error: no venv at {VENV}; fix: python {__file__} --setup")
    if not main.is_file():
        sys.exit(f"official_dreamerv3.py: error: no {main}; fix: python {__file__} --setup")
    probe = subprocess.run([str(python), "-c", "import jax, elements, ninjax, dm_control"], capture_output=True)
    if probe.returncode:
        sys.exit(f"official_dreamerv3.py: error: {VENV} lacks packages; fix: python {__file__} --setup")


def setup() -> None:
    if not SOURCE.joinpath("dreamerv3", "main.py").is_file():
        if not MIRROR.is_dir():
            sys.exit(f"official_dreamerv3.py: error: no {MIRROR}; fetch github:danijar/dreamerv3 first")
        SOURCE.mkdir(parents=True, exist_ok=True)
        archive = subprocess.Popen(["git", f"--git-dir={MIRROR}", "archive", COMMIT], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", str(SOURCE)], stdin=archive.stdout, check=True)
        archive.wait()
    if not (VENV / "bin" / "python").is_file():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(VENV / "bin" / "pip"), "install", *PINS, "matplotlib"], check=True)
    check_install()
    print(f"ready: {VENV}, {SOURCE} ({COMMIT})")


def official_command(args: argparse.Namespace) -> list[str]:
    steps = args.frames // args.repeat
    flags = ["--configs", *args.configs, "--task", args.task, "--logdir", args.logdir, "--seed", str(args.seed),
             "--run.steps", str(steps), "--run.train_ratio", f"{args.train_ratio:g}", "--run.envs", str(args.envs),
             "--batch_size", str(args.batch_size), "--batch_length", str(args.batch_length),
             "--env.dmc.repeat", str(args.repeat), "--jax.platform", "cpu", "--jax.compute_dtype", args.dtype,
             "--jax.prealloc", "False", "--logger.outputs", "jsonl", "--run.usage.nvsmi", "False", *args.extra]
    pin = ["taskset", "-c", args.cpu] if args.cpu else []
    return [*pin, str(VENV / "bin" / "python"), "-u", "-c", SHIM, str(SOURCE / "dreamerv3" / "main.py"), *flags]


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def official_curve(logdir: Path, repeat: int) -> list[list]:
    """[(policy_step, episode score, None)] from scores.jsonl (whose step is frames)."""
    return [[r["step"] // repeat, r["episode/score"], None] for r in read_jsonl(logdir / "scores.jsonl")
            if "episode/score" in r]


def run(args: argparse.Namespace) -> int:
    check_install()
    logdir = Path(args.logdir)
    if logdir.exists():
        print(f"deleting the old run in {logdir}")
        shutil.rmtree(logdir)
    logdir.mkdir(parents=True)
    command = official_command(args)
    env = {**os.environ, "XLA_FLAGS": ONE_THREAD_XLA, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"),
           "TF_CPP_MIN_LOG_LEVEL": "1", "PYTHONUNBUFFERED": "1", "OFFICIAL_NO_RENDER": "0" if args.render else "1"}
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    start = time.monotonic()
    first_train = None
    with open(logdir.parent / f"{logdir.name}.stdout.log", "w") as log:  # main.py wants to create logdir
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
        for line in proc.stdout:
            log.write(line)
            log.flush()
            print(line, end="", flush=True)
            if first_train is None and "Start training loop" in line:
                first_train = time.monotonic() - start
    proc.wait()
    wall = time.monotonic() - start
    metrics = [r for r in read_jsonl(logdir / "metrics.jsonl") if "fps/train" in r or "train/loss/dyn" in r]
    curve = official_curve(logdir, args.repeat)
    row = {"seed": args.seed, "status": "done" if proc.returncode == 0 else f"failed (exit {proc.returncode})",
           "logdir": str(logdir), "final_step": max((r["step"] for r in read_jsonl(logdir / "metrics.jsonl")),
                                                      default=0) // args.repeat,
           "eval_curve": curve, "returns_are": "training episodes (episode/score)", "action_repeat": args.repeat,
           "wall_s": wall, "startup_s": first_train, "started_at": started_at,
           "fps_train_last": metrics[-1].get("fps/train") if metrics else None,
           "command": shlex.join(command[:4] + ["<shim>"] + command[5:]), "commit": COMMIT,
           "config": {k: getattr(args, k) for k in ("task", "configs", "frames", "repeat", "train_ratio", "envs",
                                                     "batch_size", "batch_length", "dtype", "render")}}
    (logdir / "official_bench_run.json").write_text(json.dumps(row, indent=2) + "\n")
    print(f"\nwrote {logdir / 'official_bench_run.json'}: {len(curve)} episodes, wall {wall:.0f} s, "
          f"startup {first_train and round(first_train)} s, exit {proc.returncode}")
    return proc.returncode


def ours_curves(run_dir: Path) -> tuple[int, list[dict]]:
    """(action repeat, [curve rows]) of a Reverie logdir: its eval and training-episode returns, in frames."""
    import yaml
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    repeat = int(cfg.get("env", {}).get("action_repeat", 1))
    rows = read_jsonl(run_dir / "metrics.jsonl")
    ev = [(r["step"] * repeat, r["eval/return_mean"]) for r in rows if r.get("eval/return_mean") is not None]
    tr = [(r["step"] * repeat, r["episode/return"]) for r in rows if r.get("episode/return") is not None]
    return repeat, [{"label": "Reverie eval episodes", "xs": [x for x, _ in ev], "ys": [y for _, y in ev]},
                    {"label": "Reverie training episodes", "xs": [x for x, _ in tr], "ys": [y for _, y in tr]}]


def compare(args: argparse.Namespace) -> int:
    logdir, ours_dir = Path(args.logdir), Path(args.compare)
    record_path = logdir / "official_bench_run.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {"action_repeat": args.repeat}
    repeat = record["action_repeat"]
    theirs = official_curve(logdir, repeat)
    if not theirs:
        sys.exit(f"official_dreamerv3.py: error: no episode/score in {logdir / 'scores.jsonl'}")
    our_repeat, ours = ours_curves(ours_dir)
    curves = [{"label": "official JAX DreamerV3, training episodes", "xs": [s * repeat for s, _, _ in theirs],
               "ys": [y for _, y, _ in theirs]}, *ours]
    frames = args.frames
    reached = {c["label"]: max(c["xs"], default=0) for c in curves}
    window = reference_curves.WINDOW
    lines = [f"# Official JAX DreamerV3 vs Reverie: {args.task}, {frames:,} frames", "",
             f"Official danijar/dreamerv3 `{COMMIT}` (action repeat {repeat}), logdir `{logdir}`; "
             f"Reverie logdir `{ours_dir}` (action repeat {our_repeat}). Frames = policy steps × action repeat.",
             f"Value per ../shared/TARGETS.md: the mean of the points in the last {window:,} frames up to "
             f"{frames:,} frames (one seed each, so no std).", ""]
    if record.get("config"):
        cfg = record["config"]
        lines += [f"Official config: {' '.join(cfg['configs'])}, train ratio {cfg['train_ratio']:g}, "
                  f"{cfg['envs']} envs, batch {cfg['batch_size']}×{cfg['batch_length']}, {cfg['dtype']}, "
                  f"wall {record['wall_s'] / 60:.1f} min (startup {record['startup_s'] or 0:.0f} s).", ""]
    lines += ["| run | return at %s frames | points in window | frames reached |" % f"{frames:,}",
              "|---|---|---|---|"]
    values = {}
    for c in curves:
        value = reference_curves.window_mean(c["xs"], c["ys"], frames)
        n = sum(frames - window < x <= frames for x in c["xs"])
        values[c["label"]] = value
        lines.append(f"| {c['label']} | {'—' if value is None else f'{value:.1f}'} | {n} | {reached[c['label']]:,} |")
    key = "dmc_proprio/" + args.task.removeprefix("dmc_")
    published = reference_curves.value_at(reference_curves.load(key), frames) if key in reference_curves.available() else None
    if published and published["mean"] is not None:
        lines.append(f"| DreamerV3 published ({published['n']} seeds, `{key}`) | "
                     f"{published['mean']:.1f} ± {published['std']:.1f} | | |")
    if any(r < frames for r in reached.values()):
        lines += ["", "A run that stopped short of the frame budget shows its value as — (or from fewer points)."]
    name = args.name or f"official_vs_reverie_{args.task}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plotted = plot(out / f"{name}.png", curves, key if published else None, frames, args.task)
    lines += ["", f"![curves]({name}.png)" if plotted else "(no plot: matplotlib missing)", "",
              "## Reproduce", "", "```", f"python benchmarks/official_dreamerv3.py --logdir {logdir} "
              f"--compare {ours_dir} --frames {frames} --task {args.task}", "```", ""]
    (out / f"{name}.md").write_text("\n".join(lines))
    (out / f"{name}.json").write_text(json.dumps({"frames": frames, "values": values, "published": published,
                                                  "official": record, "curves": curves}, indent=2) + "\n")
    print("\n".join(lines))
    print(f"wrote {out / name}.md, .json{', .png' if plotted else ''}")
    return 0


def plot(path: Path, curves: list[dict], key: str | None, frames: int, task: str) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.2))
    if key:
        xs, mean, std = reference_curves.band(reference_curves.load(key), frames)
        ax.plot(xs, mean, color="black", linewidth=1.2, label="DreamerV3 published (mean ± std)")
        ax.fill_between(xs, [m - d for m, d in zip(mean, std)], [m + d for m, d in zip(mean, std)],
                        color="black", alpha=0.1)
    for c in curves:
        if c["xs"]:
            ax.plot(c["xs"], c["ys"], marker=".", linewidth=1, label=c["label"])
    ax.set(xlabel="env frames (policy steps × action repeat)", ylabel="episode return", title=task)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.setup:
        setup()
        return 0
    return compare(args) if args.compare else run(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
