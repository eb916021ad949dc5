"""Does a tree search over Dreamer's own world model beat its policy? One checkpoint, evaluated
with and without search on the same episodes.

For each --checkpoint (a `ckpt_*.pt` inside a Reverie run's `checkpoints/`), a scratch logdir under
--work gets the run's config.yaml and that checkpoint alone (the run itself is only read), then
`reverie.load(..., search=SIMS)` evaluates it --episodes times per setting: the policy alone
(`search 0`: the actor's mode) and each --simulations count (the tree of the run's
`behavior.planner.tree`: Gumbel MuZero by default).
Every setting plays the same episodes: one env seeded --seed, episodes one after another. Writes
dreamer_search.json and .md (mean ± std, min – max per checkpoint and setting) to --out.

    python benchmarks/dreamer_search.py --checkpoint RUN/checkpoints/ckpt_000027919.pt \\
        --simulations 16 --episodes 10 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's reverie

import torch
from replay_storage import cpu_name  # benchmarks/replay_storage.py

import reverie
from reverie import config as config_lib


def scratch_run(checkpoint: Path, work: Path) -> Path:
    """A logdir holding the run's config and this checkpoint only: (work/<run>_<step>)."""
    run = checkpoint.resolve().parents[1]
    logdir = work / f"{run.parent.name}_{run.name}_{checkpoint.stem}"
    (logdir / "checkpoints").mkdir(parents=True, exist_ok=True)
    shutil.copy(run / "config.yaml", logdir / "config.yaml")
    shutil.copy(checkpoint, logdir / "checkpoints" / checkpoint.name)
    return logdir


def evaluate(logdir: Path, simulations: int, episodes: int, seed: int) -> dict:
    policy = reverie.load(logdir, search=simulations)
    start = time.perf_counter()
    result = policy.evaluate(episodes, "eval", seed=seed)
    result["seconds"] = time.perf_counter() - start
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", action="append", required=True, type=Path)
    parser.add_argument("--simulations", type=int, nargs="+", default=[16])
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("/tmp/reverie_dreamer_search"))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = [0, *args.simulations]
    rows = []
    for checkpoint in args.checkpoint:
        logdir = scratch_run(checkpoint, args.work)
        tree = config_lib.load(logdir / "config.yaml").behavior.planner.tree
        for simulations in settings:
            result = evaluate(logdir, simulations, args.episodes, args.seed)
            row = {"checkpoint": str(checkpoint), "simulations": simulations, "tree": tree if simulations else "-",
                   **result}
            rows.append(row)
            print(f"{checkpoint.parents[1].name} {checkpoint.stem} search {simulations}: "
                  f"{result['return_mean']:.1f} ± {result['return_std']:.1f} ({result['seconds']:.0f} s)", flush=True)
    machine = f"{cpu_name()}, {args.threads} thread(s), torch {torch.__version__}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "dreamer_search.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    lines = ["# Dreamer's policy against a tree search over its own world model", "",
             (f"{machine}. Each setting plays the same {args.episodes} episodes (one env seeded {args.seed}); "
             "search 0 is the actor's mode alone."), "",
             "| checkpoint | search | tree | return mean ± std | min – max | s per episode |", "|---|---|---|---|---|---|"]
    for r in rows:
        name = f"{Path(r['checkpoint']).parents[1].name}/{Path(r['checkpoint']).stem}"
        lines.append(f"| {name} | {r['simulations']} | {r['tree']} | {r['return_mean']:.1f} ± {r['return_std']:.1f} "
                     f"| {r['return_min']:.0f} – {r['return_max']:.0f} | {r['seconds'] / r['episodes']:.1f} |")
    lines += ["", "## Reproduce", "", "```", "python benchmarks/dreamer_search.py " + " ".join(sys.argv[1:]), "```"]
    (args.out / "dreamer_search.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
