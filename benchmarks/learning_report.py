"""The learning benchmark's report (benchmarks/learning.py): the summary across seeds (spread of
steps- and wall-to-threshold, eval return at checkpoints, the comparison with a published curve),
the markdown tables and the plot of the eval curves."""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import reference_curves  # benchmarks/reference_curves.py
from plots import pyplot


def spread(values: list[float | None]) -> dict[str, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def checkpoint_returns(seed: dict[str, Any], points: list[int]) -> list[float | None]:
    """Return of the last eval at or before each point; None past where the run got to."""
    return [max(((s, r) for s, r, _ in seed["eval_curve"] if s <= p), default=(None, None))[1]
            if p <= seed["final_step"] else None for p in points]


def compare_with_reference(args: argparse.Namespace, seeds: list[dict], repeat: int) -> dict[str, Any] | None:
    """Ours vs the published curve at the end of the run (N = steps × repeat frames), both as the
    mean of the evals in the last 30K frames up to N, then mean ± std over seeds."""
    if not args.reference:
        return None
    frames = args.steps * repeat
    ours = [{"seed": s["seed"], "xs": [step * repeat for step, _, _ in s["eval_curve"]],
             "ys": [ret for _, ret, _ in s["eval_curve"]]} for s in seeds]
    return {"key": args.reference, "frames": frames, "action_repeat": repeat,
            "window_frames": reference_curves.WINDOW,
            "ours": reference_curves.value_at(ours, frames),
            "published": reference_curves.value_at(reference_curves.load(args.reference), frames)}


def summarise(args: argparse.Namespace, seeds: list[dict], repeat: int = 1) -> dict[str, Any]:
    points = [round(args.steps * k / 5) for k in range(1, 6)]
    per_seed = {str(s["seed"]): checkpoint_returns(s, points) for s in seeds}
    return {
        "reference": compare_with_reference(args, seeds, repeat),
        "seeds": len(seeds), "solved": sum(s["steps_to_threshold"] is not None for s in seeds),
        "stayed_solved": sum(s["stays_solved"] for s in seeds),
        "steps_to_threshold": spread([s["steps_to_threshold"] for s in seeds]),
        "wall_s_to_threshold": spread([s["wall_s_to_threshold"] for s in seeds]),
        "wall_s": spread([s["wall_s"] for s in seeds]),
        "checkpoints": {"steps": points, "eval_return": per_seed,
                        "median": [spread(list(col))["median"] for col in zip(*per_seed.values())]},
    }


def fmt(value: Any, kind: str = "") -> str:
    if value is None:
        return "—"
    if kind == "time":
        return f"{value:.0f} s" if value < 120 else f"{value / 60:.1f} min"
    if kind == "int":
        return f"{value:,.0f}"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def fmt_spread(s: dict, kind: str) -> str:
    """median [min – max]"""
    if s["median"] is None:
        return "—"
    return f"{fmt(s['median'], kind)} [{fmt(s['min'], kind)} – {fmt(s['max'], kind)}]"


def short_step(step: int) -> str:
    return f"{step // 1000}K" if step % 1000 == 0 and step else f"{step:,}"


def table_row(*cells: Any) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def write_markdown(path: Path, result: dict[str, Any]) -> None:
    cfg, seeds, summary, machine = result["config"], result["seeds"], result["summary"], result["machine"]
    thr, n, dirty = cfg["threshold"], summary["seeds"], " (uncommitted changes)" if result["git_dirty"] else ""
    lines = [
        f"# Learning benchmark: {cfg['task']}", "",
        f"Reverie `{result['git_commit'][:12]}`{dirty}, {result['finished_at']}; {machine['platform']}, "
        f"{machine['cpu_count']} CPUs, torch {machine['torch']} ({machine['torch_threads']} threads), "
        f"{machine['accelerator']}.",
        f"Presets: {', '.join(cfg['presets_resolved'])}; overrides: {' '.join(cfg['overrides']) or 'none'}; "
        f"{cfg['steps']:,} env steps per seed, train ratio {cfg['train_ratio']:g}, "
        f"eval every {cfg['eval_every']:,} steps over {cfg['eval_episodes']} episodes.",
        f"Solved: eval return ≥ {thr:g}. Stays solved: the last three evals all ≥ {cfg['stay_threshold']:g}. "
        "Wall-clock counts from the subprocess start, eval time included.", "",
        table_row("seed", "status", f"steps to {thr:g}", f"wall to {thr:g}", "last 3 evals", "stays solved",
                  "wall total", "updates", "train ratio", "env steps/s"),
        "|" + "---|" * 10,
    ]
    for s in seeds:
        lines.append(table_row(
            s["seed"], s["status"], fmt(s["steps_to_threshold"], "int"), fmt(s["wall_s_to_threshold"], "time"),
            ", ".join(fmt(r) for r in s["last3_eval_returns"]), "yes" if s["stays_solved"] else "no",
            fmt(s["wall_s"], "time"), fmt(s["updates"], "int"), fmt(s["train_ratio_achieved"]),
            fmt(s["env_steps_per_s"])))
    lines.append(table_row(
        "**all**", f"solved {summary['solved']}/{n}", fmt_spread(summary["steps_to_threshold"], "int"),
        fmt_spread(summary["wall_s_to_threshold"], "time"), "", f"{summary['stayed_solved']}/{n}",
        fmt_spread(summary["wall_s"], "time"), "", "", ""))
    points = summary["checkpoints"]["steps"]
    lines += ["", "Summary cells: median [min – max]; the to-threshold columns over the seeds that reached it.",
              "", "## Eval return at checkpoints", "",
              "Mean return of the last eval at or before each checkpoint (— where the run stopped earlier).", "",
              table_row("seed", *map(short_step, points)), "|" + "---|" * (len(points) + 1)]
    for seed, returns in summary["checkpoints"]["eval_return"].items():
        lines.append(table_row(seed, *map(fmt, returns)))
    lines.append(table_row("**median**", *map(fmt, summary["checkpoints"]["median"])))
    if ref := summary.get("reference"):
        ours, pub = ref["ours"], ref["published"]
        lines += ["", "## Against the published DreamerV3 curve", "",
                  f"Reference `{ref['key']}` (danijar/dreamerv3 scores, {pub['n']} seeds). Both values: per seed the "
                  f"mean of the evals in the last {ref['window_frames']:,} frames up to {ref['frames']:,} frames "
                  f"(action repeat {ref['action_repeat']}), then mean ± std over seeds.", "",
                  table_row("", f"return at {ref['frames']:,} frames", "seeds"), "|---|---|---|",
                  table_row("Reverie", f"{fmt(ours['mean'])} ± {fmt(ours['std'])}", ours["n"]),
                  table_row("DreamerV3 (published)", f"{fmt(pub['mean'])} ± {fmt(pub['std'])}", pub["n"])]
        if ours["mean"] is not None and pub["mean"]:
            lines.append(f"\nReverie / published: {ours['mean'] / pub['mean']:.2f}.")
    lines += ["", "## Reproduce", "", "```", result["command"], "```", ""]
    path.write_text("\n".join(lines))


def write_plot(path: Path, result: dict[str, Any]) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ref = result["summary"].get("reference")
    repeat = ref["action_repeat"] if ref else 1
    if ref:
        xs, mean, std = reference_curves.band(reference_curves.load(ref["key"]), ref["frames"])
        ax.plot(xs, mean, color="black", linewidth=1.5, label=f"DreamerV3 published ({ref['published']['n']} seeds, mean ± std)")
        ax.fill_between(xs, [m - d for m, d in zip(mean, std)], [m + d for m, d in zip(mean, std)],
                        color="black", alpha=0.12)
    for s in result["seeds"]:
        if s["eval_curve"]:
            steps, mean, std = zip(*s["eval_curve"])
            steps = [step * repeat for step in steps]
            std = [v or 0.0 for v in std]
            line, = ax.plot(steps, mean, marker=".", label=f"seed {s['seed']}")
            ax.fill_between(steps, [m - d for m, d in zip(mean, std)], [m + d for m, d in zip(mean, std)],
                            color=line.get_color(), alpha=0.15)
    ax.axhline(result["config"]["threshold"], color="grey", linestyle="--", linewidth=1, label="threshold")
    ax.set(xlabel="env frames (policy steps × action repeat)" if ref else "env steps",
           ylabel="eval return (mean ± std)",
           title=f"Reverie on {result['config']['task']}: {', '.join(result['config']['presets_resolved'])}")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
