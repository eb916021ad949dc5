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

from . import __version__
from . import config as config_lib
from .errors import Interrupted, TrainingError, UserError, plural

EXAMPLES = """examples:
  reverie train --env CartPole-v1 --logdir runs/cartpole
  reverie train --env Pendulum-v1 --preset size12m --steps 100000 run.train_ratio=256
  reverie train --env my_package:MyEnv-v0 --preset debug
  reverie train --env dmc:walker_walk --preset dmc_vision
  reverie train --env atari:pong            # preset atari100k by default
  reverie train --env crafter
  reverie train --env CartPole-v1 --nproc 2 run.threads=1   # data-parallel, 2 ranks (torchrun)
  reverie eval --logdir runs/cartpole --episodes 20
  reverie eval --logdir runs/walker --episodes 5 --video   # + videos/eval_0_<step>.{gif,mp4}
  reverie eval --logdir runs/cartpole --search 16          # act by tree search over the world model
  reverie config --preset debug          # print the resolved config
"""


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (`reverie: error: ... (see reverie train --help)`), exit 2."""

    def error(self, message: str):
        self.exit(2, f"reverie: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="reverie", description="World-model RL: DreamerV3 and its family.",
                    formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES)
    parser.add_argument("--version", action="version", version=f"reverie {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,eval,config}")

    train = sub.add_parser("train", help="train an agent (resumes when the logdir holds a run)",
                           formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES)
    train.add_argument("--env", default=None, help="Gymnasium id, module:EnvId, dmc:<domain>_<task>, atari:<game> or crafter "
                       "(default CartPole-v1)")
    train.add_argument("--preset", action="append", default=[], metavar="P",
                       help=f"preset, repeatable, applied in order: {', '.join(config_lib.available_presets())}")
    train.add_argument("--logdir", default=None, help="run folder (default runs/<env>); an existing run resumes "
                       "there with its saved config")
    train.add_argument("--steps", type=int, default=None, metavar="N",
                       help="total env steps of the run (on resume: train on up to N)")
    train.add_argument("--seed", type=int, default=None, metavar="S", help="random seed of a new run (default 0)")
    train.add_argument("--no-progress", action="store_true", help="plain log lines instead of a live bar")
    train.add_argument("--nproc", type=int, default=1, metavar="N",
                       help="data-parallel over N processes on this machine (torchrun; one GPU each on CUDA): "
                            "batch_size is the job's batch, each rank trains on batch_size / N (default 1)")
    train.add_argument("overrides", nargs="*", metavar="key=value",
                       help="config overrides, e.g. run.train_ratio=64; on resume only the runtime keys "
                            "run.threads, run.device, run.precision, run.compile, run.retain_memory")

    ev = sub.add_parser("eval", help="evaluate the newest checkpoint of a run")
    ev.add_argument("--logdir", required=True, help="the run folder (holds config.yaml and checkpoints/)")
    ev.add_argument("--episodes", type=int, default=10, metavar="N", help="episodes to play (default 10)")
    ev.add_argument("--mode", choices=["eval", "train"], default="eval",
                    help="eval: the policy's mode; train: sample actions as in training")
    ev.add_argument("--video", action="store_true",
                    help="write videos of the first episodes to <logdir>/videos/eval_<i>_<step>.{gif,mp4}: image "
                         "observations with the model's open-loop prediction and its error, else rendered frames")
    ev.add_argument("--video-episodes", type=int, default=None, metavar="N",
                    help="with --video: how many episodes to record (default 1)")
    ev.add_argument("--search", type=int, default=0, metavar="SIMS",
                    help="act by a tree search of SIMS simulations over a Dreamer run's world model (discrete actions; "
                         "the actor is its prior, the critic its value; default 0: the policy alone)")
    ev.add_argument("--device", default="auto", help="auto (default: CUDA if torch sees a GPU), cpu, cuda, cuda:N or mps")
    ev.add_argument("--threads", type=int, default=0, metavar="N", help="torch CPU threads (default 0: as many as the cores left free by other processes)")

    cfg = sub.add_parser("config", help="print the resolved config (presets + overrides) as YAML")
    cfg.add_argument("--env", default=None, help="env id: checked, and picks the suite's default preset as `train` does")
    cfg.add_argument("--preset", action="append", default=[], metavar="P",
                     help="preset, repeatable, applied in order after the defaults")
    cfg.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. run.train_ratio=64")
    return parser


def cmd_train(args) -> int:
    from . import api, distributed

    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps must be a positive number of env steps, got {args.steps}")
    if args.nproc < 1:
        raise UserError(f"--nproc must be ≥ 1 processes, got {args.nproc}")
    logdir = Path(args.logdir) if args.logdir else None
    folder = logdir if logdir is not None else api.default_logdir(args.env)
    created = False
    if not (folder / "config.yaml").exists():
        created = not folder.exists()
        _check_logdir_writable(folder)
    if args.nproc > 1:
        return _launch_ranks(args, folder, created)
    try:
        result = api.train(args.env, logdir=logdir, presets=args.preset, steps=args.steps, seed=args.seed,
                           overrides=args.overrides, progress=not args.no_progress)
    except UserError:
        if created and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()  # leave no empty run folder behind a refused start
        raise
    if not result.get("nothing_to_do") and distributed.from_environment().main:  # data-parallel: rank 0's
        print(json.dumps(result, default=str))
    return 0


def _launch_ranks(args, folder: Path, created: bool) -> int:
    """`--nproc N`: check what can be checked once (the config, the batch's split, a saved run's
    world size), then run the same command under torchrun, N ranks on this machine."""
    from . import api, distributed
    from .run.resume import saved_world_size
    from .run.train import per_rank_config

    try:
        saved = saved_world_size(folder)
        if saved is not None and saved != args.nproc:
            raise UserError(f"{folder} was trained by {saved} process(es): resume it with --nproc {saved} "
                            "(a replay split into shards is not re-split)")
        cfg = api.run_config(args.env, args.logdir, args.preset, args.steps, args.seed, args.overrides)
        per_rank_config(cfg, distributed.World(0, args.nproc))
    except UserError:
        if created and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise
    return distributed.launch(args.nproc, _without_nproc(args.argv))


def _without_nproc(argv: list[str]) -> list[str]:
    """The `train` arguments without `--nproc N` (and without the leading `train`)."""
    out, skip = [], False
    for item in argv[argv.index("train") + 1:]:
        if skip:
            skip = False
        elif item == "--nproc":
            skip = True
        elif not item.startswith("--nproc="):
            out.append(item)
    return out


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
    if args.video_episodes is not None and not args.video:
        raise UserError("--video-episodes needs --video; add --video or drop --video-episodes")
    video_episodes = 1 if args.video_episodes is None else args.video_episodes
    if video_episodes < 1:
        raise UserError(f"--video-episodes must be ≥ 1, got {video_episodes}")
    if args.threads < 0:
        raise UserError(f"--threads must be ≥ 0 (0: fit the free cores), got {args.threads}")
    from .run.threads import ThreadGovernor

    ThreadGovernor(args.threads).measure_now()  # 0: as many as the free cores

    def show(count: int, episode_return: float, length: int) -> None:
        print(f"episode {count}/{args.episodes}: return {episode_return:.2f}, {plural(length, 'step')}",
              file=sys.stderr, flush=True)

    result = api.evaluate(args.logdir, args.episodes, args.mode, video=args.video, video_episodes=video_episodes,
                          device=args.device, on_episode=show, search=args.search)
    print(f"mean return {result['return_mean']:.2f} ± {result['return_std']:.2f} over "
          f"{plural(result['episodes'], 'episode')} (mode {args.mode}); written to {Path(args.logdir) / 'eval.json'}")
    if args.video:
        for gif in result.get("videos", []):
            mp4 = Path(gif).with_suffix(".mp4")
            print(f"video written: {gif}" + (f" and {mp4}" if mp4.exists() else ""))
        if not result.get("videos"):
            print(f"reverie: {result.get('video_note', 'no video written')}", file=sys.stderr)
    return 0


def cmd_config(args) -> int:
    import yaml

    from .api import build_config, preset_names
    from .envs import make_env

    cfg = build_config(args.env, args.preset, args.overrides)
    if args.env is not None:
        make_env(args.env, cfg.env, 0).close()  # an unknown id or unsupported spaces fail here
    print(f"# presets applied in order: {', '.join(preset_names(args.preset, args.env))}; then the overrides")
    print(yaml.safe_dump(config_lib.to_dict(cfg), sort_keys=False), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(argv)
    args.argv = argv
    # argparse stops filling a positional list at the first option: `key=value`s given after an
    # option (`--preset debug run.threads=1`) arrive here and are overrides too.
    unknown = [item for item in extra if item.startswith("-") or "=" not in item]
    if unknown or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or extra)}")
    if extra:
        args.overrides += extra
    try:
        return {"train": cmd_train, "eval": cmd_eval, "config": cmd_config}[args.command](args)
    except UserError as error:
        print(f"reverie: error: {error}", file=sys.stderr)
        return 2
    except TrainingError as error:
        print(f"reverie: error: {error}", file=sys.stderr)
        return 1
    except Interrupted:
        return 130  # the run said where it stopped
    except KeyboardInterrupt:
        print("reverie: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
