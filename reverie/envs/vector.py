"""N envs stepped together, in-process (serial) or one worker process per env (parallel).

``VecEnv.step`` takes actions (N, A) and returns a step dict of stacked arrays (N, ...). Envs reset
automatically: when env i's previous step had ``is_last``, the next ``step`` ignores its action and
returns its reset step (``is_first``, reward 0) instead, so every returned row is a valid step.

Where the envs run (in this process, or one spawned worker process each, stepped concurrently)
is `workers.py`; worker failures re-raise in the parent with the worker's traceback.

Env faults. With ``max_restarts > 0`` an env that raises (anything but a ``UserError``) or whose
worker process dies is rebuilt from its factory instead: a failed ``step`` returns, for that env,
the end of its broken episode — its last observation with reward 0, ``is_last`` and not
``is_terminal`` — and the next ``step`` starts a new episode; a failed reset is retried on the
rebuilt env; a failed rebuild is one more fault. ``restarts`` counts rebuilds, each with a
``RuntimeWarning`` naming the env, the error and its traceback's tail. More than ``max_restarts``
faults of one env in a row (no successful step between) raise ``WorkerError``; a rebuilt env with
other spaces raises ``EnvError``. Failures while the VecEnv is being built are never retried.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from reverie.envs.workers import (
    Command,
    EnvFn,
    ParallelBackend,
    SerialBackend,
    WorkerError,
    stack_steps,
)
from reverie.errors import EnvError


def _cut_episode(last_row: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """The step that ends an episode cut short by an env fault: the last observation again,
    reward 0, is_last and not is_terminal."""
    if last_row is None:
        raise RuntimeError("an env failed before its first reset")
    row = {key: value.copy() for key, value in last_row.items()}
    row.update(reward=np.zeros_like(row["reward"]), is_first=np.zeros_like(row["is_first"]),
               is_last=np.ones_like(row["is_last"]), is_terminal=np.zeros_like(row["is_terminal"]))
    return row


def _picklable(obj: Any) -> bool:
    try:
        pickle.dumps(obj)
        return True
    except Exception:
        return False


class VecEnv:
    """``num_envs`` envs behind one batched interface, with auto-reset (see the module docstring).

    Args:
        env_fns: zero-argument factories, one per env, returning a ``GymEnv`` (or a
            ``gymnasium.Env``, which gets a default ``GymEnv``).
        parallel: one worker process per env. Needs picklable factories; otherwise the envs run
            in-process and a warning says why.
        max_restarts: rebuild an env that fails, up to this many times in a row (see the module
            docstring); 0 re-raises the first failure.
    """

    def __init__(self, env_fns: Sequence[EnvFn], parallel: bool = False, max_restarts: int = 0):
        env_fns = list(env_fns)
        self.max_restarts = int(max_restarts)
        self.restarts = 0  # envs rebuilt after a fault
        if not env_fns:
            raise ValueError("VecEnv needs at least one env factory")
        if parallel and not _picklable(env_fns):
            warnings.warn(
                "env factory cannot be pickled for worker processes (an env instance, lambda or local "
                "function); running the envs in-process instead. Pass an env id or a module-level "
                "factory to run them in parallel.",
                RuntimeWarning,
                stacklevel=2,
            )
            parallel = False
        self.parallel = parallel
        self._closed = True  # until the backend exists
        self._backend: SerialBackend | ParallelBackend = (
            ParallelBackend(env_fns) if parallel else SerialBackend(env_fns)
        )
        self._closed = False
        self.obs_space, self.act_space = self._backend.spaces[0]
        for index, spaces in enumerate(self._backend.spaces[1:], start=1):
            if spaces != (self.obs_space, self.act_space):
                self.close()
                raise EnvError(
                    f"env {index} has different observation/action spaces than env 0; all envs of a VecEnv must match"
                )
        self._needs_reset = np.ones(len(env_fns), dtype=bool)  # (N,)
        self._fault_streak = np.zeros(len(env_fns), dtype=np.int64)  # faults since the last good step
        self._last_rows: list[dict[str, np.ndarray] | None] = [None] * len(env_fns)

    @property
    def num_envs(self) -> int:
        return len(self._needs_reset)

    def reset(self) -> dict[str, np.ndarray]:
        """Reset every env; returns stacked first steps (N, ...)."""
        self._check_open()
        steps = self._run([("reset", ())] * self.num_envs)
        self._needs_reset[:] = False
        return stack_steps(steps)

    def step(self, actions: np.ndarray) -> dict[str, np.ndarray]:
        """Step with actions (N, A); envs whose episode ended (or never started) return a reset step."""
        self._check_open()
        actions = np.asarray(actions, dtype=np.float32)
        expected = (self.num_envs, self.act_space.dim)
        if actions.shape != expected:
            raise ValueError(f"expected actions of shape {expected}, got {actions.shape}")
        commands = [
            ("reset", ()) if self._needs_reset[i] else ("step", (actions[i],)) for i in range(self.num_envs)
        ]
        steps = self._run(commands)
        self._needs_reset[:] = [bool(step["is_last"]) for step in steps]
        return stack_steps(steps)

    def _run(self, commands: list[Command]) -> list[dict[str, np.ndarray]]:
        """Run reset/step commands; restart the envs that fail (see the module docstring)."""
        if not self.max_restarts:
            return self._backend.run(commands)
        answers = self._backend.run(commands, catch=True)
        steps = []
        for index, ((name, _), (status, payload)) in enumerate(zip(commands, answers)):
            if status == "ok" and name == "step":
                self._fault_streak[index] = 0
            while status != "ok":
                self._count_fault(index, payload)
                status, payload = self._backend.restart(index)
                if status != "ok":
                    continue  # the rebuild failed: one more fault
                if payload != (self.obs_space, self.act_space):
                    raise EnvError(f"env {index} was rebuilt after a fault with different observation/action "
                                   "spaces; its factory must always build the same kind of env")
                self.restarts += 1
                if name == "step":  # the broken episode ends here; the next step resets
                    status, payload = "ok", _cut_episode(self._last_rows[index])
                else:  # a reset must give a first step: retry it on the rebuilt env
                    status, payload = self._backend.run_one(index, ("reset", ()))
            self._last_rows[index] = payload
            steps.append(payload)
        return steps

    def _count_fault(self, index: int, packed_error: tuple) -> None:
        """Re-raise a UserError or a fault past the limit; otherwise warn that env `index` restarts."""
        message, worker_traceback, user_error = packed_error
        if user_error is not None:
            raise user_error
        self._fault_streak[index] += 1
        if self._fault_streak[index] > self.max_restarts:
            raise WorkerError(index, f"{message} (it failed {self._fault_streak[index]} times in a row, more than "
                                     f"env.max_restarts={self.max_restarts}; the env itself is broken)",
                              worker_traceback)
        tail = worker_traceback.strip().splitlines()[-20:]  # the innermost frames and the error
        warnings.warn(f"env {index} failed ({message}); restarting it (fault {self._fault_streak[index]} in a row, "
                      f"{self.restarts} restarts so far)" + ("\n" + "\n".join(tail) if tail else ""),
                      RuntimeWarning, stacklevel=4)  # unique text: the default filter shows each one

    def render(self) -> list[Any]:
        """``render()`` of every env, in order."""
        self._check_open()
        return self._backend.run([("render", ())] * self.num_envs)

    def close(self) -> None:
        if getattr(self, "_closed", True):
            return
        self._closed = True
        self._backend.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this VecEnv is closed")

    def __enter__(self) -> VecEnv:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
