"""Where a VecEnv's envs run: all in this process (`SerialBackend`) or one worker process per env
(`ParallelBackend`).

Both backends take the same commands, a list of (GymEnv method name, args) with one entry per env
or None, and answer each with ("ok", result) or ("error", packed error) (`pack_error`), so the
VecEnv above them treats a failed env the same way wherever it runs. Parallel workers are started
with the "spawn" context (a forked worker can hang after rendering) and talk over Pipes; a call
sends every worker its command first, then receives every answer, so the envs step concurrently.
A worker ignores Ctrl-C (the parent handles it); its failures carry the worker's traceback.
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
import signal
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from reverie.envs.gym_adapter import GymEnv
from reverie.errors import UserError

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


def stack_steps(steps: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.stack([step[key] for step in steps]) for key in steps[0]}  # (N, ...)


class SerialBackend:
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
            return "error", pack_error(error)

    def restart(self, index: int) -> tuple[str, Any]:
        """Rebuild env `index`: ("ok", its spaces) or ("error", packed error)."""
        try:
            new = _as_gym_env(self.env_fns[index]())
        except Exception as error:  # noqa: BLE001 - counted as one more fault by the caller
            return "error", pack_error(error)
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


def pack_error(error: BaseException) -> tuple[str, str, UserError | None]:
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
            conn.send(("error", pack_error(error)))
            return
        while True:
            name, args = conn.recv()
            if name == "close":
                conn.send(("ok", None))
                return
            try:
                result = getattr(env, name)(*args)
            except Exception as error:
                conn.send(("error", pack_error(error)))
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


class ParallelBackend:
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
