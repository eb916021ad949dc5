"""Evaluation during training: every `run.eval_every` policy steps (from step 0; 0: none during
the run) and once more at the end (`run.eval_final`).

Each evaluation plays `run.eval_episodes` full episodes with the agent's evaluation policy
(`agent.eval_mode`) on envs of its own (`env.eval_envs` of them, seeded seed + 10,000, made at
the first evaluation; an env instance given for training is deep-copied), writes the
`eval/return_mean`, `eval/return_std`, … row and one console line. The step of the next
evaluation is `counters.next_eval` (checkpointed, so a resumed run keeps the schedule), the next
multiple of `run.eval_every` after the step an evaluation ran at: the grid holds where a vector step
overshoots it or a resume recovers more env steps than the checkpoint had seen.
`run_episodes` (evaluate.py) plays the episodes.
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym

from ..agents import Agent
from ..config import Config
from ..envs import make_vec_env
from ..logging import MetricsWriter
from ..progress import Progress
from .counters import Counters
from .evaluate import run_episodes


class Evaluator:
    def __init__(self, cfg: Config, env_spec: Any, agent: Agent, counters: Counters, writer: MetricsWriter,
                 progress: Progress):
        self.cfg, self.env_spec, self.agent, self.counters = cfg, env_spec, agent, counters
        self.writer, self.progress = writer, progress
        self.envs: Any = None
        self.last: dict[str, float] = {}  # the newest evaluation's summary

    def due(self, now: float, step: int) -> bool:
        return self.counters.next_eval >= 0 and step >= self.counters.next_eval

    def run(self, now: float | None = None) -> None:
        self.evaluate_and_log()
        every = self.cfg.run.eval_every
        self.counters.next_eval = (self.counters.step // every + 1) * every

    def final(self) -> None:
        """The evaluation at the end of the run, when `run.eval_final` asks for it."""
        if self.cfg.run.eval_final and self.cfg.run.eval_episodes:
            self.evaluate_and_log(final=True)

    def evaluate(self) -> dict[str, float]:
        if self.envs is None:
            # An env instance backs the training env; evaluation gets its own copy.
            spec = copy.deepcopy(self.env_spec) if isinstance(self.env_spec, gym.Env) else self.env_spec
            self.envs = make_vec_env(spec, self.cfg.env, self.cfg.env.eval_envs, self.cfg.seed + 10_000)
        return run_episodes(self.agent, self.envs, self.cfg.run.eval_episodes, self.agent.eval_mode)

    def evaluate_and_log(self, final: bool = False) -> None:
        result = self.last = self.evaluate()
        self.writer.write(self.counters.step, {f"eval/{k}": v for k, v in result.items()})
        where = "final" if final else f"step {self.counters.step:,}:"
        self.progress.log(f"{where} eval return {result['return_mean']:.1f} ± {result['return_std']:.1f} "
                          f"over {result['episodes']} episodes")

    def close(self) -> None:
        if self.envs is not None:
            self.envs.close()
