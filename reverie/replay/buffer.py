"""Sequence replay: a FIFO of env steps sampled as (B, T) windows, uniform plus an online queue.

Storage. The buffer holds `capacity` steps over all envs as one ring per env: each env gets
`capacity // num_envs` slots (the remainder is unused), so the oldest steps of every env are
overwritten first once its ring is full. Arrays are allocated on the first `add` from the keys,
shapes and dtypes seen there, with shape (num_envs, per_env_capacity, ...) per key; the dtype is
kept exactly (uint8 images stay uint8). With `storage="disk"` the image keys (uint8, ≥ 3 dims per
step) are memory-mapped files in `folder` instead (`reverie.replay.disk`): the OS pages them, RAM
holds only the small keys.

Windows. A window is T = `batch_length` consecutive steps of one env, all still stored. Windows run
across episode boundaries (a window may hold an `is_first` step in its middle: the model resets its
recurrent state there) but never mix envs and never jump over the ring's write head. Every env
is written in lockstep (one `add` per vector-env step), so each env has the same number of valid
windows and uniform sampling is uniform over (env, start) pairs.

Online queue. With `online=True`, every T added steps each env pushes its fresh, non-overlapping
window onto a FIFO queue. `sample` first serves queued windows (oldest first, skipping any that were
overwritten in the meantime), then fills the batch uniformly, so every fresh sequence is trained on
once (DreamerV3's online replay). The queue keeps at most as many windows as the buffer can hold
side by side (num_envs × (per_env_capacity // T)); older ones are dropped.

Positions are tracked in per-env step counts ("time" t = 0, 1, 2, ... since the first add); the
slot of step t is t % per_env_capacity, and the steps still stored are t in [added - stored, added)
with stored = min(added - first, per_env_capacity). `first` is 0 unless the replay was restored
from a state that had lost its oldest steps (e.g. a resume from partly missing chunk files).

Write-back. `sample_windows` also returns where each window came from (env, start time); `write_back`
overwrites some keys of those steps in place (DreamerV3's replay context: the latents recomputed
by an update replace the stored ones), skipping any step overwritten since it was sampled.

Persistence. `export_steps(start, end)` copies a time range out (for the chunk files of
`reverie.run.replay_store`); `state_dict()` / `load_state_dict()` carry everything else needed to
resume exactly (counters, RNG state, online queue), with or without the data.
"""

from __future__ import annotations

import collections
from typing import Any

import numpy as np

from reverie.errors import CheckpointError, ConfigError, UserError
from reverie.replay import sizes
from reverie.replay.disk import DiskRing
from reverie.replay.sizes import StepSpec

_STATE_VERSION = 2


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"replay {name} must be a positive integer, got {value!r}")
    return int(value)


class Replay:
    """FIFO sequence replay over `num_envs` lockstep envs; see the module docstring."""

    def __init__(
        self,
        capacity: int,
        batch_size: int,
        batch_length: int,
        num_envs: int = 1,
        online: bool = True,
        seed: int = 0,
        storage: str = "memory",
        folder: Any = None,
    ) -> None:
        if storage not in ("memory", "disk") or (storage == "disk" and folder is None):
            raise ConfigError(f"replay storage must be memory or disk (disk needs a folder), got {storage!r}")
        self.storage = storage
        self.batch_size = _positive_int("batch_size", batch_size)
        self.batch_length = _positive_int("batch_length", batch_length)
        self.num_envs = _positive_int("num_envs", num_envs)
        capacity = _positive_int("capacity", capacity)
        self.per_env_capacity = capacity // self.num_envs
        if self.per_env_capacity < self.batch_length:
            raise ConfigError(
                f"replay capacity {capacity:,} is too small for {self.num_envs} envs × batch_length "
                f"{self.batch_length}: set replay.capacity to at least "
                f"{self.num_envs * self.batch_length:,}"
            )
        self.capacity = self.per_env_capacity * self.num_envs  # effective, in steps over all envs
        self.online = bool(online)
        self._rng = np.random.Generator(np.random.PCG64(seed))
        self._data: dict[str, np.ndarray] = {}  # key -> (num_envs, per_env_capacity, ...)
        self._added = 0  # steps added per env (the same for every env)
        self._first = 0  # time of the oldest step ever stored since the last restore
        self._queue: collections.deque[tuple[int, int]] = collections.deque()  # (env, start t)
        self._queue_limit = self.num_envs * (self.per_env_capacity // self.batch_length)
        self._ring = DiskRing(folder, self.num_envs, self.per_env_capacity) if storage == "disk" else None

    # ----------------------------------------------------------------------------- sizes

    estimate_bytes = staticmethod(sizes.estimate_bytes)

    @property
    def step_spec(self) -> StepSpec:
        """{key: (shape of one step, dtype)} of the stored arrays; empty before the first add."""
        return {key: (array.shape[2:], array.dtype) for key, array in self._data.items()}

    @property
    def bytes_per_step(self) -> int:
        """Bytes of one stored step over all keys (0 before the first add)."""
        return self.estimate_bytes(self.step_spec, 1)

    @property
    def disk_keys(self) -> tuple[str, ...]:
        """Keys whose steps live in the memory-mapped ring files (none with storage=memory)."""
        return tuple(self._ring.arrays) if self._ring else ()

    @property
    def chunk_keys(self) -> tuple[str, ...]:
        """Keys the chunk files carry: all but the disk keys (the ring files hold those)."""
        return tuple(key for key in self._data if key not in self.disk_keys)

    def sync(self) -> None:
        """Flush the ring files to disk (storage=disk; nothing to do in RAM)."""
        if self._ring:
            self._ring.flush()

    def describe(self) -> str:
        """One line for the console, e.g. 'replay: capacity 1,000 steps × 20 B/step = 19.53 KiB (RAM)'."""
        if not self._data:
            return f"replay: capacity {self.capacity:,} steps (allocated on the first step)"
        folder = self._ring.folder if self._ring else None
        return sizes.describe_steps(self.step_spec, self.capacity, self.storage, folder)

    def __len__(self) -> int:
        """Steps currently stored, over all envs."""
        return self.num_envs * self._stored_per_env

    @property
    def _stored_per_env(self) -> int:
        return min(self._added - self._first, self.per_env_capacity)

    @property
    def added(self) -> int:
        """Steps added per env since the start of the run (the time of the next step)."""
        return self._added

    @property
    def ready(self) -> bool:
        """True once at least one full window of `batch_length` steps can be sampled."""
        return self._stored_per_env >= self.batch_length

    @property
    def holds_batch(self) -> bool:
        """True once the replay holds at least one batch's worth of steps (batch_size × batch_length)
        and a full window can be sampled: when official DreamerV3 starts training."""
        return self.ready and len(self) >= self.batch_size * self.batch_length

    @property
    def queue_length(self) -> int:
        """Fresh windows waiting in the online queue (some may be overwritten before they are served)."""
        return len(self._queue)

    # ----------------------------------------------------------------------------- adding

    def add(self, steps: dict[str, np.ndarray]) -> None:
        """Store one vector-env step: every value has leading dim num_envs, shape (N, ...)."""
        arrays = {key: np.asarray(value) for key, value in steps.items()}
        if not self._data:
            self._allocate(arrays)
        slot = self._added % self.per_env_capacity
        if self._ring and arrays.keys() != self._data.keys():  # a step recovered from a chunk: images in the ring
            steps, count = self._ring.complete({k: v[:, None] for k, v in arrays.items()}, self._data.keys(),
                                               self._added, self._added + 1)
            arrays = {key: value[:, 0] for key, value in steps.items()} if count else arrays
        if arrays.keys() != self._data.keys():
            raise UserError(
                f"replay step keys {sorted(arrays)} differ from the first step's {sorted(self._data)}: "
                "every step must have the same keys"
            )
        if self._ring:
            self._ring.invalidate(slot)
        for key, value in arrays.items():
            expected = self._data[key].shape[2:]
            if value.shape != (self.num_envs, *expected):
                raise UserError(
                    f"replay step '{key}' has shape {value.shape}, expected {(self.num_envs, *expected)} "
                    "(num_envs first, then the shape of the first step)"
                )
            self._data[key][:, slot] = value
        if self._ring:
            self._ring.stamp(slot, self._added)
        self._added += 1
        if self.online and self._added % self.batch_length == 0:
            start = self._added - self.batch_length
            self._queue.extend((env, start) for env in range(self.num_envs))
            while len(self._queue) > self._queue_limit:
                self._queue.popleft()

    def _allocate(self, arrays: dict[str, np.ndarray]) -> None:
        if not arrays:
            raise UserError("replay step has no keys: pass a dict of arrays with leading dim num_envs")
        for key, value in arrays.items():
            if value.ndim == 0 or value.shape[0] != self.num_envs:
                raise UserError(
                    f"replay step '{key}' has shape {value.shape}: its leading dim must be "
                    f"num_envs={self.num_envs}"
                )
        disk = self._ring.open({k: (v.shape[1:], v.dtype) for k, v in arrays.items()}) if self._ring else {}
        self._data = {
            key: disk[key] if key in disk else np.zeros((self.num_envs, self.per_env_capacity, *value.shape[1:]), value.dtype)
            for key, value in arrays.items()
        }
        self._data.update({key: array for key, array in disk.items() if key not in self._data})

    # ----------------------------------------------------------------------------- sampling

    def sample(self) -> dict[str, np.ndarray]:
        """A batch of windows: {key: (B, T, ...)} fresh arrays. Online windows first, then uniform."""
        return self.sample_windows()[0]

    def sample_windows(self) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """`sample`'s batch and where its windows start: (batch, env (B,), start time (B,))."""
        if not self.ready:
            raise RuntimeError(
                f"replay has {self._added} steps per env but needs batch_length={self.batch_length} "
                "before it can sample: add more steps first (check `ready`)"
            )
        env, start = self._take_online()  # (K,), (K,) with K <= B
        missing = self.batch_size - len(env)
        if missing > 0:
            uniform_env, uniform_start = self._draw_uniform(missing)
            env = np.concatenate([env, uniform_env])
            start = np.concatenate([start, uniform_start])
        return self._gather(env, start), env, start

    def write_back(self, env: np.ndarray, start: np.ndarray, steps: dict[str, np.ndarray]) -> None:
        """Overwrite stored keys of the steps at times start[i] + (0, 1, …, L−1) of env[i]: steps
        {key: (B, L, ...)}. Steps no longer stored (overwritten since) are left alone."""
        env, start = np.asarray(env, np.int64), np.asarray(start, np.int64)
        for key, values in steps.items():
            if key not in self._data:
                raise KeyError(f"replay holds no key '{key}' to write back (it holds {sorted(self._data)})")
            times = start[:, None] + np.arange(values.shape[1], dtype=np.int64)  # (B, L)
            valid = (times >= self._oldest_start()) & (times < self._added)  # (B, L)
            rows = np.broadcast_to(env[:, None], times.shape)
            self._data[key][rows[valid], times[valid] % self.per_env_capacity] = values[valid]

    def sample_uniform(self, count: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """`count` uniformly drawn windows {key: (count, T, ...)} that leave the training stream
        untouched: no online-queue entry is taken and the replay's own RNG is not advanced (for
        reports and videos)."""
        if not self.ready:
            raise RuntimeError("replay is not ready to sample: add more steps first (check `ready`)")
        env, start = self._draw_uniform(count, rng)
        return self._gather(env, start)

    def _gather(self, env: np.ndarray, start: np.ndarray) -> dict[str, np.ndarray]:
        """Windows of `batch_length` steps starting at (env[i], start[i])."""
        offsets = np.arange(self.batch_length, dtype=np.int64)  # (T,)
        slots = (start[:, None] + offsets) % self.per_env_capacity  # (B, T)
        rows = env[:, None]  # (B, 1), broadcast against slots
        return {key: np.asarray(array[rows, slots]) for key, array in self._data.items()}  # (B, T, ...)

    def _oldest_start(self) -> int:
        """Time of the oldest step still stored in every env."""
        return self._added - self._stored_per_env

    def _take_online(self) -> tuple[np.ndarray, np.ndarray]:
        """Pop up to B still-valid windows from the queue, oldest first."""
        envs: list[int] = []
        starts: list[int] = []
        oldest = self._oldest_start()
        while self._queue and len(envs) < self.batch_size:
            env, start = self._queue.popleft()
            if start >= oldest:  # otherwise overwritten since it was queued: skip it
                envs.append(env)
                starts.append(start)
        return np.asarray(envs, np.int64), np.asarray(starts, np.int64)

    def _draw_uniform(self, count: int, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """`count` windows drawn uniformly (with replacement) over all envs and valid starts."""
        windows_per_env = self._stored_per_env - self.batch_length + 1
        index = (rng or self._rng).integers(0, self.num_envs * windows_per_env, size=count, dtype=np.int64)
        env = index // windows_per_env  # (count,)
        start = self._oldest_start() + index % windows_per_env  # (count,)
        return env, start

    # ----------------------------------------------------------------------------- state

    def export_steps(self, start: int, end: int, keys: Any = None) -> dict[str, np.ndarray]:
        """Copies of the steps with times [start, end) of every env: {key: (num_envs, end - start, ...)}
        for `keys` (default all)."""
        if not self._oldest_start() <= start <= end <= self._added:
            raise ValueError(
                f"steps [{start}, {end}) are not stored: the replay holds [{self._oldest_start()}, {self._added})"
            )
        slots = np.arange(start, end, dtype=np.int64) % self.per_env_capacity  # (end - start,)
        return {key: np.asarray(array[:, slots]) for key, array in self._data.items() if keys is None or key in keys}

    def prepend_steps(self, steps: dict[str, np.ndarray]) -> int:
        """Restore older steps just before the oldest stored one: {key: (num_envs, n, ...)} in time
        order, ending at the current oldest time. Keeps the newest ones that fit in the capacity;
        returns how many per env were stored (0 once the buffer is full)."""
        arrays = {key: np.asarray(value) for key, value in steps.items()}
        if not arrays:
            return 0
        lengths = {array.shape[1] if array.ndim > 1 else -1 for array in arrays.values()}
        if len(lengths) != 1 or min(lengths) < 0 or any(a.shape[0] != self.num_envs for a in arrays.values()):
            raise CheckpointError(
                f"replay steps have shapes {({k: a.shape for k, a in arrays.items()})}, expected "
                f"({self.num_envs}, n, ...) with the same n for every key: the replay files are corrupt"
            )
        if min(lengths) == 0:
            return 0
        if min(lengths) > self._first:
            raise CheckpointError(
                f"replay steps reach back {min(lengths)} steps from time {self._first}, before the run's first "
                "step: the replay files are corrupt; delete the logdir's replay/ folder to resume with an empty replay"
            )
        if not self._data:
            self._allocate({key: array[:, 0] for key, array in arrays.items()})
        count = min(lengths.pop(), self.per_env_capacity - self._stored_per_env)
        if self._ring and arrays.keys() != self._data.keys():  # chunk steps: their images are in the ring
            arrays, count = self._ring.complete(arrays, self._data.keys(), self._first - count, self._first)
            if count == 0 and self._stored_per_env == 0:
                self._data = {}  # nothing restored: the first add allocates again
                return 0
        if arrays.keys() != self._data.keys():
            raise CheckpointError(
                f"replay steps have keys {sorted(arrays)} but the replay holds {sorted(self._data)}: the "
                "replay files come from another env or config; start a new logdir"
            )
        start = self._first - count
        slots = np.arange(start, self._first, dtype=np.int64) % self.per_env_capacity  # (count,)
        if self._ring:
            self._ring.invalidate(slots)
        for key, array in arrays.items():
            self._data[key][:, slots] = array[:, array.shape[1] - count:]
        if self._ring:
            self._ring.stamp(slots, np.arange(start, self._first, dtype=np.int64))
        self._first = start
        return count

    def state_dict(self, with_data: bool = True) -> dict:
        """Everything needed to resume exactly: counters, RNG state, online queue and (unless
        `with_data=False`, for when the data lives in chunk files) a copy of the stored steps in
        time order, (num_envs, stored, ...)."""
        state = {
            "version": _STATE_VERSION,
            "per_env_capacity": self.per_env_capacity,
            "num_envs": self.num_envs,
            "batch_length": self.batch_length,
            "online": self.online,
            "added": self._added,
            "rng": self._rng.bit_generator.state,
            "queue": np.asarray(list(self._queue), np.int64).reshape(-1, 2),  # (K, 2): env, start
        }
        if with_data:
            state["data"] = self.export_steps(self._oldest_start(), self._added)
        return state

    def load_state_dict(self, state: dict, data: dict[str, np.ndarray] | None = None) -> None:
        """Restore from `state_dict()`; the layout (envs, capacity, batch_length) must match.

        `data` (default `state["data"]`) holds the most recent stored steps in time order, ending at
        `state["added"]`: {key: (num_envs, n, ...)} with n ≤ per_env_capacity. Fewer steps than the
        state once held are fine (the oldest ones are then gone); queued windows that are no longer
        stored are skipped when they come up.
        """
        if state.get("version") != _STATE_VERSION:
            raise CheckpointError(
                f"replay state has version {state.get('version')!r}, expected {_STATE_VERSION}: "
                "the checkpoint comes from another Reverie version; start a new logdir"
            )
        for name in ("per_env_capacity", "num_envs", "batch_length"):
            if int(state[name]) != getattr(self, name):
                raise CheckpointError(
                    f"replay checkpoint has {name}={state[name]} but this run has "
                    f"{getattr(self, name)}: resume with the same replay.capacity, env.num_envs, "
                    "batch_length and replay.context (a window holds both), or start a new logdir"
                )
        added = int(state["added"])
        self._data, self._added, self._first = {}, added, added  # empty, then filled backwards
        self.prepend_steps(state.get("data", {}) if data is None else data)  # copies: no aliasing
        self._rng.bit_generator.state = state["rng"]
        # `online` stays as this run configures it; a run resumed without it drops the queue.
        queue = np.asarray(state["queue"], np.int64).reshape(-1, 2) if self.online else np.empty((0, 2))
        # Windows no longer stored are skipped when they come up (`_take_online`).
        self._queue = collections.deque(
            (int(env), int(start)) for env, start in queue if start <= added - self.batch_length)
