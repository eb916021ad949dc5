"""`reverie train | eval | config` — the command line.

Every user error (unknown env or config key, wrong type, bad checkpoint, full disk) is printed as
one line `reverie: error: ...` and exits with code 2; a run that stops because its updates keep
failing (non-finite losses) exits with code 1 the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import config as config_lib
from .errors import TrainingError, UserError

EXAMPLES = """examples:
  reverie train --env CartPole-v1 --logdir runs/cartpole
  reverie train --env Pendulum-v1 --preset size12m --steps 100000 run.train_ratio=256
  reverie train --env my_package:MyEnv-v0 --preset debug
  reverie train --env dmc:walker_walk --preset dmc_vision
  reverie train --env atari:pong            # preset atari100k by default
  reverie train --env crafter
  reverie eval --logdir runs/cartpole --episodes 20
  reverie eval --logdir runs/walker --episodes 5 --video   # + videos/eval_0_<step>.{gif,mp4}
  reverie config --preset debug          # print the resolved config
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reverie", description="World-model RL: DreamerV3 and its family.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train an agent (resumes when the logdir holds a run)",
                           formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES)
    train.add_argument("--env", default=None, help="Gymnasium id, module:EnvId, dmc:<domain>_<task>, atari:<game> or crafter "
                       "(default CartPole-v1)")
    train.add_argument("--preset", action="append", default=[], metavar="P",
                       help=f"preset, repeatable, applied in order: {', '.join(config_lib.available_presets())}")
    train.add_argument("--logdir", default=None, help="run folder (default runs/<env>); an existing run resumes")
    train.add_argument("--steps", type=int, default=None, help="total env steps of the run")
    train.add_argument("--seed", type=int, default=None)
    train.add_argument("--no-progress", action="store_true", help="plain log lines instead of a live bar")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. run.train_ratio=64")

    ev = sub.add_parser("eval", help="evaluate the newest checkpoint of a run")
    ev.add_argument("--logdir", required=True)
    ev.add_argument("--episodes", type=int, default=10)
    ev.add_argument("--mode", choices=["eval", "train"], default="eval",
                    help="eval: the policy's mode; train: sample actions as in training")
    ev.add_argument("--video", action="store_true",
                    help="write videos of the first episodes to <logdir>/videos/eval_<i>_<step>.{gif,mp4}: image "
                         "observations with the model's open-loop prediction and its error, else rendered frames")
    ev.add_argument("--video-episodes", type=int, default=1, metavar="N",
                    help="with --video: how many episodes to record (default 1)")

    cfg = sub.add_parser("config", help="print the resolved config (presets + overrides) as YAML")
    cfg.add_argument("--env", default=None, help="env id; picks the suite's default preset as `train` does")
    cfg.add_argument("--preset", action="append", default=[], metavar="P")
    cfg.add_argument("overrides", nargs="*", metavar="key=value")
    return parser


def cmd_train(args) -> int:
    from . import api

    env = args.env
    logdir = Path(args.logdir) if args.logdir else Path("runs") / (env or "CartPole-v1").replace(":", "_")
    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps must be a positive number of env steps, got {args.steps}")
    if (logdir / "config.yaml").exists():
        if args.preset or args.overrides or args.env or args.seed is not None:
            print(f"reverie: resuming {logdir} with its saved config; --preset/--env/--seed/overrides are "
                  "ignored (use a new --logdir for a new run)", file=sys.stderr)
        result = api.train(logdir=logdir, steps=args.steps, progress=not args.no_progress)
    else:
        created = not logdir.exists()
        _check_logdir_writable(logdir)
        try:
            result = api.train(env or "CartPole-v1", logdir=logdir, presets=args.preset, steps=args.steps,
                               seed=args.seed, overrides=args.overrides, progress=not args.no_progress)
        except UserError:
            if created and logdir.is_dir() and not any(logdir.iterdir()):
                logdir.rmdir()  # leave no empty run folder behind a refused start
            raise
    print(json.dumps({k: v for k, v in result.items()}, default=str))
    return 0


def _check_logdir_writable(logdir: Path) -> None:
    try:
        logdir.mkdir(parents=True, exist_ok=True)
        probe = logdir / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise UserError(f"cannot write to logdir {logdir} ({error.strerror}); choose another --logdir") from None


def cmd_eval(args) -> int:
    from . import api

    if args.episodes < 1:
        raise UserError(f"--episodes must be ≥ 1, got {args.episodes}")
    if args.video_episodes < 1:
        raise UserError(f"--video-episodes must be ≥ 1, got {args.video_episodes}")
    result = api.evaluate(args.logdir, args.episodes, args.mode, video=args.video,
                          video_episodes=args.video_episodes)
    print(f"mean return {result['return_mean']:.2f} ± {result['return_std']:.2f} over "
          f"{result['episodes']} episodes (mode {args.mode}); written to {Path(args.logdir) / 'eval.json'}")
    if args.video:
        for gif in result.get("videos", []):
            mp4 = Path(gif).with_suffix(".mp4")
            print(f"video written: {gif}" + (f" and {mp4}" if mp4.exists() else ""))
        if not result.get("videos"):
            print(f"reverie: {result.get('video_note', 'no video written')}", file=sys.stderr)
    return 0


def cmd_config(args) -> int:
    import yaml

    from .api import build_config

    cfg = build_config(args.env, args.preset, args.overrides)
    print(yaml.safe_dump(config_lib.to_dict(cfg), sort_keys=False), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"train": cmd_train, "eval": cmd_eval, "config": cmd_config}[args.command](args)
    except UserError as error:
        print(f"reverie: error: {error}", file=sys.stderr)
        return 2
    except TrainingError as error:
        print(f"reverie: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("reverie: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
