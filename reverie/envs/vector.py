"""N envs stepped together, in-process (serial) or one worker process per env (parallel).

``VecEnv.step`` takes actions (N, A) and returns a step dict of stacked arrays (N, ...). Envs reset
automatically: when env i's previous step had ``is_last``, the next ``step`` ignores its action and
returns its reset step (``is_first``, reward 0) instead, so every returned row is a valid step.

Parallel workers are started with the "spawn" context (a forked worker can hang after rendering)
and talk over Pipes; a call sends every worker its command first, then receives every answer, so
the envs step concurrently. Worker failures re-raise in the parent with the worker's traceback.

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

import multiprocessing as mp
import pickle
import signal
import traceback
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from reverie.envs.gym_adapter import GymEnv
from reverie.errors import EnvError, UserError

EnvFn = Callable[[], "GymEnv | gym.Env"]
Command = tuple[str, tuple]  # (GymEnv method name, positional args)


class WorkerError(RuntimeError):
    """An env worker process raised or died; the message carries the worker's traceback."""

    def __init__(self, index: int, message: str, worker_traceback: str = ""):
        text = f"env worker {index} failed: {message}"
        if worker_traceback:
            text += f"\n--- traceback in env worker {index} ---\n{worker_traceback.rstrip()}"
        super().__init__(text)
        self.index = index
        self.worker_traceback = worker_traceback


def _as_gym_env(env: Any) -> GymEnv:
    """Accept a factory's result as a ``GymEnv``, wrapping a plain ``gymnasium.Env``."""
    return env if isinstance(env, GymEnv) else GymEnv(env)


def _stack(steps: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.stack([step[key] for step in steps]) for key in steps[0]}  # (N, ...)


class _SerialBackend:
    """All envs in this process; ``run`` executes the commands one env after another."""

    def __init__(self, env_fns: Sequence[EnvFn]):
        self.env_fns = list(env_fns)
        self.envs: list[GymEnv] = []
        try:
            for env_fn in self.env_fns:
                self.envs.append(_as_gym_env(env_fn()))
        except BaseException:
            self.close()
            raise
        self.spaces = [(env.obs_space, env.act_space) for env in self.envs]

    def run(self, commands: Sequence[Command], catch: bool = False) -> list[Any]:
        """Results in env order; with `catch`, ("ok", result) or ("error", packed error) per env."""
        if not catch:
            return [getattr(env, name)(*args) for env, (name, args) in zip(self.envs, commands)]
        return [self.run_one(index, command) for index, command in enumerate(commands)]

    def run_one(self, index: int, command: Command) -> tuple[str, Any]:
        """One command on one env: ("ok", result) or ("error", packed error)."""
        name, args = command
        try:
            return "ok", getattr(self.envs[index], name)(*args)
        except Exception as error:  # noqa: BLE001 - the caller restarts the env or re-raises
            return "error", _pack_error(error)

    def restart(self, index: int) -> tuple[str, Any]:
        """Rebuild env `index`: ("ok", its spaces) or ("error", packed error)."""
        try:
            new = _as_gym_env(self.env_fns[index]())
        except Exception as error:  # noqa: BLE001 - counted as one more fault by the caller
            return "error", _pack_error(error)
        old = self.envs[index]
        if new.env is not old.env:  # a factory of one env instance gives the same env back
            try:
                old.close()
            except Exception:  # noqa: BLE001 - a broken env may fail to close too
                pass
        self.envs[index] = new
        return "ok", (new.obs_space, new.act_space)

    def close(self) -> None:
        envs, self.envs = self.envs, []
        for env in envs:
            env.close()


def _pack_error(error: BaseException) -> tuple[str, str, UserError | None]:
    """(one-line description, traceback text, the error itself when it is a picklable UserError)."""
    user_error = None
    if isinstance(error, UserError):
        try:
            user_error = pickle.loads(pickle.dumps(error))
        except Exception:
            user_error = None
    return f"{type(error).__name__}: {error}", traceback.format_exc(), user_error


def _worker_main(index: int, conn: Any, env_fn: EnvFn) -> None:
    """Worker loop: build the env, announce its spaces, then serve commands until "close".

    Messages to the parent are ("ok", payload) or ("error", packed error). After an error the
    worker exits: the env's state is unknown, and a restart builds a fresh worker.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    env = None
    try:
        try:
            env = _as_gym_env(env_fn())
            conn.send(("ok", (env.obs_space, env.act_space)))
        except Exception as error:
            conn.send(("error", _pack_error(error)))
            return
        while True:
            name, args = conn.recv()
            if name == "close":
                conn.send(("ok", None))
                return
            try:
                result = getattr(env, name)(*args)
            except Exception as error:
                conn.send(("error", _pack_error(error)))
                return
            conn.send(("ok", result))
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        pass  # the parent went away
    finally:
        if env is not None:
            try:
                env.close()
            except Exception:
                pass
        conn.close()


class _ParallelBackend:
    """One spawned daemon worker process per env, each owning a Pipe end."""

    def __init__(self, env_fns: Sequence[EnvFn]):
        self._ctx = mp.get_context("spawn")
        self._env_fns = list(env_fns)
        self._conns: list[Any] = [None] * len(self._env_fns)
        self._procs: list[Any] = [None] * len(self._env_fns)
        self._failed: set[int] = set()  # workers that stopped after an error
        try:
            for index in range(len(self._env_fns)):
                self._start_worker(index)
            self.spaces = self._receive_all()
        except BaseException:
            self.close()
            raise

    def _start_worker(self, index: int) -> None:
        parent_conn, child_conn = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=_worker_main,
            args=(index, child_conn, self._env_fns[index]),
            name=f"reverie-env-{index}",
            daemon=True,  # killed with the parent at interpreter exit
        )
        proc.start()
        child_conn.close()
        self._conns[index], self._procs[index] = parent_conn, proc

    def _receive(self, index: int) -> tuple[str, Any]:
        try:
            return self._conns[index].recv()
        except (EOFError, ConnectionResetError, OSError):
            proc = self._procs[index]
            proc.join(timeout=1.0)
            return "died", f"the process exited unexpectedly (exit code {proc.exitcode})"

    def _receive_one(self, index: int) -> tuple[str, Any]:
        """``_receive`` with a death reported as ("error", packed error)."""
        status, payload = self._receive(index)
        if status != "ok":
            self._failed.add(index)
        return (status, payload) if status != "died" else ("error", (payload, "", None))

    def _receive_all(self, catch: bool = False) -> list[Any]:
        """Receive one answer from every worker (keeping all pipes in step), then raise the first
        error; with `catch`, return the (status, payload) answers instead ("died" as "error")."""
        if catch:
            return [self._receive_one(index) for index in range(len(self._conns))]
        answers = [self._receive(index) for index in range(len(self._conns))]
        self._failed.update(i for i, (status, _) in enumerate(answers) if status != "ok")
        for index, (status, payload) in enumerate(answers):
            if status == "error":
                message, worker_traceback, user_error = payload
                if user_error is not None:
                    raise user_error
                raise WorkerError(index, message, worker_traceback)
            if status == "died":
                raise WorkerError(index, payload)
        return [payload for _, payload in answers]

    def run(self, commands: Sequence[Command], catch: bool = False) -> list[Any]:
        if self._failed:
            index = min(self._failed)
            raise WorkerError(index, "it stopped after an earlier error; close this VecEnv and make a new one")
        for index, command in enumerate(commands):
            try:
                self._conns[index].send(command)
            except (BrokenPipeError, OSError):
                pass  # reported by _receive as a dead worker
        return self._receive_all(catch)

    def run_one(self, index: int, command: Command) -> tuple[str, Any]:
        """One command on one worker: ("ok", result) or ("error", packed error)."""
        try:
            self._conns[index].send(command)
        except (BrokenPipeError, OSError):
            pass  # reported by _receive as a dead worker
        return self._receive_one(index)

    def restart(self, index: int) -> tuple[str, Any]:
        """Replace worker `index` (stopped or dead) by a fresh one: ("ok", spaces) or ("error", packed)."""
        conn, proc = self._conns[index], self._procs[index]
        if proc is not None and proc.is_alive():
            proc.terminate()
        if proc is not None:
            proc.join(timeout=2.0)
        if conn is not None:
            conn.close()
        self._start_worker(index)
        answer = self._receive_one(index)  # the new worker's spaces, or its construction error
        if answer[0] == "ok":
            self._failed.discard(index)
        return answer

    def close(self) -> None:
        for conn, proc in zip(self._conns, self._procs):
            if conn is None or proc is None or not proc.is_alive():
                continue
            try:
                conn.send(("close", ()))
            except (BrokenPipeError, OSError):
                pass
        for index, (conn, proc) in enumerate(zip(self._conns, self._procs)):
            if proc is not None:
                try:
                    if conn is not None and proc.is_alive() and conn.poll(2.0):
                        conn.recv()
                except (EOFError, OSError):
                    pass
                proc.join(timeout=2.0)
                if proc.is_alive():
                    proc.terminate()
                    proc.join(timeout=1.0)
            if conn is not None:
                conn.close()
            self._conns[index] = self._procs[index] = None


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
        self._backend: _SerialBackend | _ParallelBackend = (
            _ParallelBackend(env_fns) if parallel else _SerialBackend(env_fns)
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
        return _stack(steps)

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
        return _stack(steps)

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
