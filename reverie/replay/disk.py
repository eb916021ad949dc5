"""The replay's image ring on disk (`replay.storage: disk`): memory-mapped files under the logdir.

    replay/ring/<key>.npy   one .npy file per image key, shape (num_envs, per_env_capacity, *step shape),
                            the same ring layout as `Replay`'s in-RAM arrays (slot of time t: t % capacity)
    replay/ring/times.i64   (per_env_capacity,) int64: the per-env time whose step each slot holds
                            (-1: none); every env is written in lockstep, so one stamp serves all

Which keys go on disk: uint8 arrays with ≥ 3 dims per step (images such as 64×64×3); everything
else (actions, rewards, flags, the replay context's latents, which training writes back) stays in
RAM. The OS pages the files in and out, so the process's resident memory stays small however large
the capacity; the files are sparse and fill as the ring does.

The ring files are the crash-safe copy of the image steps: the chunk files (store.py) then carry only
the small keys, and a resume re-opens the ring instead of reading images from chunks. A slot's stamp
is invalidated before its data is written and set to t after, so after a `kill -9` (the page cache
outlives the process) a slot holds step t exactly when its stamp says t: a resume restores the steps
whose stamps match and drops those the crashed run overwrote after its checkpoint. `flush` (msync)
runs before every chunk and checkpoint write, so a machine crash too keeps every step they count.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np
from numpy.lib.format import open_memmap

from reverie.errors import UserError

TIMES = "times.i64"


def format_bytes(num_bytes: int) -> str:
    """Human-readable size in binary units: '512 B', '1.50 KiB', '1.15 GiB'."""
    if num_bytes < 1024:
        return f"{num_bytes} B"
    size = float(num_bytes)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        size /= 1024.0
        if size < 1024.0 or unit == "TiB":
            return f"{size:.2f} {unit}"
    raise AssertionError("unreachable")


def on_disk(step_shape: tuple[int, ...], dtype: np.dtype) -> bool:
    """Whether a key with this per-step shape and dtype lives on disk: uint8 images (≥ 3 dims)."""
    return np.dtype(dtype) == np.uint8 and len(step_shape) >= 3


class DiskRing:
    """Memory-mapped ring arrays for the image keys of a `Replay`, in `folder`."""

    def __init__(self, folder: Path, num_envs: int, per_env_capacity: int) -> None:
        self.folder = Path(folder)
        self.num_envs, self.per_env_capacity = num_envs, per_env_capacity
        self.arrays: dict[str, np.memmap] = {}  # key -> (num_envs, per_env_capacity, ...)
        self.times: np.memmap | None = None  # (per_env_capacity,) int64

    def path(self, key: str) -> Path:
        return self.folder / f"{quote(key, safe='')}.npy"

    def open(self, spec: dict[str, tuple[tuple[int, ...], np.dtype]]) -> dict[str, np.memmap]:
        """Open (or create) the ring files of the disk keys in `spec` and of every ring file already
        in the folder (a resume, whose chunk steps carry no images). Returns {key: memmap}."""
        self.arrays = {}
        self.folder.mkdir(parents=True, exist_ok=True)
        wanted = {key: (tuple(shape), np.dtype(dtype)) for key, (shape, dtype) in spec.items() if on_disk(shape, dtype)}
        fresh = False
        for path in sorted(self.folder.glob("*.npy")):
            key = unquote(path.stem)
            try:
                array = open_memmap(path, mode="r+")
            except (OSError, ValueError):
                continue  # unreadable: recreated below if the env has the key
            layout = (self.num_envs, self.per_env_capacity)
            if array.shape[:2] != layout or (key in wanted and (array.shape[2:], array.dtype) != wanted[key]):
                del array  # another layout: recreated below
                continue
            self.arrays[key] = array
        for key, (shape, dtype) in wanted.items():
            if key not in self.arrays:
                self._check_space(self.num_envs * self.per_env_capacity * int(np.prod(shape)) * dtype.itemsize)
                self.arrays[key] = open_memmap(self.path(key), mode="w+", dtype=dtype,
                                               shape=(self.num_envs, self.per_env_capacity, *shape))
                fresh = True
        times = self.folder / TIMES
        size = self.per_env_capacity * 8
        if fresh or not times.is_file() or times.stat().st_size != size:
            np.full(self.per_env_capacity, -1, np.int64).tofile(times)  # nothing valid yet
        self.times = np.memmap(times, np.int64, mode="r+", shape=(self.per_env_capacity,))
        return dict(self.arrays)

    def _check_space(self, nbytes: int) -> None:
        free = shutil.disk_usage(self.folder).free
        if free < nbytes:
            raise UserError(f"replay.storage=disk needs {nbytes / 2**30:.1f} GiB in {self.folder} but the disk "
                            f"has {free / 2**30:.1f} GiB free: free disk space or lower replay.capacity")

    def invalidate(self, slots: np.ndarray) -> None:
        self.times[slots] = -1

    def stamp(self, slots: np.ndarray, times: np.ndarray) -> None:
        self.times[slots] = times

    def held(self, start: int, end: int) -> np.ndarray:
        """(end - start,) bool: whether the ring holds step t for each t in [start, end)."""
        t = np.arange(start, end, dtype=np.int64)
        times = self.times
        if times is None:  # not opened yet (a resume): read the stamps from the folder
            path = self.folder / TIMES
            if not any(self.folder.glob("*.npy")):
                return np.ones(len(t), bool)  # no image keys on disk: the chunks hold everything
            times = np.fromfile(path, np.int64) if path.is_file() else np.empty(0, np.int64)
            if len(times) != self.per_env_capacity:
                return np.zeros(len(t), bool)
        elif not self.arrays:
            return np.ones(len(t), bool)
        return times[t % self.per_env_capacity] == t

    def complete(self, steps: dict[str, np.ndarray], keys, start: int, end: int) -> tuple[dict[str, np.ndarray], int]:
        """Chunk steps {key: (num_envs, n, ...)} of times [end - n, end), without the disk keys, with
        those added from the ring for the newest `count` of [start, end) that it still holds, all keys cut
        to those: returns (steps, count). Unchanged if `keys` are not theirs plus the ring's (an error later)."""
        if set(self.arrays) | steps.keys() != set(keys):
            return steps, end - start
        held = self.held(start, end)[::-1]  # newest first: keep the newest run that matches
        count = len(held) if held.all() else int(np.argmin(held))
        slots = np.arange(end - count, end, dtype=np.int64) % self.per_env_capacity  # (count,)
        steps = {key: array[:, array.shape[1] - count:] for key, array in steps.items()}
        steps.update({key: np.asarray(array[:, slots]) for key, array in self.arrays.items() if key not in steps})
        return steps, count

    def flush(self) -> None:
        """Write the dirty pages to disk (msync), so the files hold every step added so far."""
        for array in self.arrays.values():
            array.flush()
        if self.times is not None:
            self.times.flush()

    def resident_bytes(self) -> int:
        """Bytes the ring files take on disk now (they are sparse until filled)."""
        paths = [self.path(key) for key in self.arrays] + [self.folder / TIMES]
        return sum(os.stat(p).st_blocks * 512 for p in paths if p.exists())
