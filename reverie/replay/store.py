"""The replay on disk: every env step of a run, as chunk files under `logdir/replay/`.

    replay/chunk_<start>_<end>.npz   the steps with per-env times [start, end) of every env,
                                     {key: (num_envs, end - start, ...)}, numbers zero-padded to 10
    replay/written_back.npz          the keys that training writes back into replay (`rewritable`,
                                     e.g. the replay context's latents) for every stored step, as
                                     they were at the newest checkpoint; "start": the first step's time

A chunk is written every `chunk_length` steps per env, and a shorter one whenever a checkpoint is
saved (`flush`), so the disk always holds every step up to the newest checkpoint and a crash loses
at most the steps of the unfinished chunk. Chunks never overlap: each starts where the previous one
ended. Each is written atomically (temporary name, fsync, rename). Chunks that have left the
replay's capacity window are deleted.

The checkpoint is the record of learning (weights, counters at the time `added` = A), the chunks are
the record of experience. `restore` rebuilds the replay from both:
    steps before A: read newest first from the chunks that end at A, until the capacity is full;
    steps after A:  complete chunks written after the checkpoint, replayed through `Replay.add` (so
                    the online queue is rebuilt as it was) and reported as recovered, so the trainer
                    moves its step counter past them instead of collecting them again.
A chunk that cannot be read ends the chain there with a warning; files after a break are renamed
`*.npz.stale` so that later chunks never overlap them. Chunks are never rewritten: values written
back into replay after a chunk was saved live in `written_back.npz`, rewritten whole at each
checkpoint and laid over the chunks' values on restore (an unreadable one is skipped with a warning:
the chunks' own values, as the policy stored them, stay).

With `replay.storage: disk` the chunks carry only the small keys: the image keys' ring files
(`replay/ring/`, reverie.replay.disk) are their crash-safe copy, flushed before every chunk write.
A restore then takes each step's images from the ring and stops where the crashed run overwrote them.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reverie.errors import ReverieWarning
from reverie.files import atomic_file
from reverie.replay.buffer import Replay

CHUNK_PATTERN = re.compile(r"^chunk_(\d{10})_(\d{10})\.npz$")
WRITTEN_BACK = "written_back.npz"


@dataclass(frozen=True)
class Chunk:
    start: int  # per-env time of the first step
    end: int  # per-env time after the last step
    path: Path


class ReplayStore:
    """Writes `replay`'s steps to `folder` as they arrive and rebuilds it from there on resume."""

    def __init__(self, folder: Path, replay: Replay, chunk_length: int = 1024, rewritable: tuple[str, ...] = ()):
        self.folder = Path(folder)
        self.replay = replay
        self.rewritable = tuple(rewritable)  # keys that `Replay.write_back` changes after they were stored
        # A chunk is copied out of the ring buffer, so it must fit in it.
        self.chunk_length = max(1, min(int(chunk_length), replay.per_env_capacity))
        self.written = 0  # per-env time up to which every step is on disk

    def chunks(self) -> list[Chunk]:
        """Chunk files, oldest first."""
        if not self.folder.is_dir():
            return []
        matches = ((CHUNK_PATTERN.match(path.name), path) for path in self.folder.iterdir())
        return sorted((Chunk(int(m[1]), int(m[2]), path) for m, path in matches if m), key=lambda c: (c.start, c.end))

    # ----------------------------------------------------------------------------- writing

    def write_due(self) -> None:
        """Write every complete chunk of steps added since the last write."""
        while self.replay.added - self.written >= self.chunk_length:
            self._write(self.written, self.written + self.chunk_length)

    def flush(self) -> None:
        """Write the steps of the unfinished chunk too (before a checkpoint) and drop old chunks."""
        if self.replay.added > self.written:
            self._write(self.written, self.replay.added)
        if self.rewritable and len(self.replay):
            start = self.replay.added - len(self.replay) // self.replay.num_envs
            steps = self.replay.export_steps(start, self.replay.added)
            with atomic_file(self.folder / WRITTEN_BACK) as f:
                np.savez(f, start=np.int64(start), **{key: steps[key] for key in self.rewritable})
        self.prune()

    def _write(self, start: int, end: int) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.replay.sync()  # storage=disk: the ring files hold these steps' images before the chunk counts them
        arrays = self.replay.export_steps(start, end, self.replay.chunk_keys)  # {key: (num_envs, end - start, ...)}
        with atomic_file(self.folder / f"chunk_{start:010d}_{end:010d}.npz") as f:
            np.savez(f, **arrays)
        self.written = end

    def prune(self) -> None:
        """Delete chunks whose steps have all left the replay's capacity window."""
        oldest_needed = self.replay.added - self.replay.per_env_capacity
        for chunk in self.chunks():
            if chunk.end <= oldest_needed:
                chunk.path.unlink(missing_ok=True)

    # ----------------------------------------------------------------------------- resuming

    def recoverable(self, added: int) -> int:
        """The per-env time up to which chunks written after a checkpoint at time `added` continue
        without a gap (`added` itself when none do); their files are not read here."""
        _, after = self._chains(added)
        return max([added] + [chunk.end for chunk in after])

    def restore(self, replay_state: dict, until: int | None = None) -> dict[str, np.ndarray]:
        """Load the checkpoint's replay state (counters, RNG, queue) and its steps from the chunks,
        then add the steps of chunks written after it, up to per-env time `until` (default: all).
        Returns the recovered steps {key: (num_envs, n, ...)} (n = 0 when the checkpoint was the
        last thing written)."""
        for leftover in self.folder.glob(".chunk_*.tmp") if self.folder.is_dir() else ():
            leftover.unlink(missing_ok=True)  # a write cut short by a crash
        replay, added = self.replay, int(replay_state["added"])
        replay.load_state_dict(replay_state, data={})
        before, after = self._chains(added)
        for chunk in before:  # newest first, until the capacity is full
            steps = self._read(chunk, chunk.start, min(chunk.end, added))
            if steps is None or replay.prepend_steps(steps) < min(chunk.end, added) - chunk.start:
                break
        if len(replay) < replay.num_envs * min(added, replay.per_env_capacity):
            warnings.warn(f"the replay held {min(added, replay.per_env_capacity):,} steps per env at the "
                          f"checkpoint but {len(replay) // replay.num_envs:,} were found in {self.folder}; "
                          "resuming with those", ReverieWarning, stacklevel=2)
        self._restore_written_back()
        recovered: list[dict[str, np.ndarray]] = []
        self.written = added
        for chunk in after:  # oldest first
            end = chunk.end if until is None else min(chunk.end, until)
            steps = self._read(chunk, max(chunk.start, added), end) if end > max(chunk.start, added) else None
            if steps is None:
                break
            count = self._held(replay.added, end)  # storage=disk: steps whose images the ring still holds
            for i in range(count):
                replay.add({key: array[:, i] for key, array in steps.items()})
            recovered.append({key: array[:, :count] for key, array in steps.items()})
            self.written = replay.added
            if self.written < chunk.end:  # cut at `until`, or images overwritten: the rest is stale
                break
        for chunk in self.chunks():  # whatever lies past the write head would overlap new chunks
            if chunk.end > self.written:
                chunk.path.rename(chunk.path.with_name(chunk.path.name + ".stale"))
        if not recovered:
            return {}
        return {key: np.concatenate([steps[key] for steps in recovered], axis=1) for key in recovered[0]}

    def _held(self, start: int, end: int) -> int:
        """How many steps from `start` on the replay can take from a chunk: all of [start, end) unless
        storage=disk and the crashed run overwrote some of their images in the ring files."""
        ring = self.replay._ring
        if ring is None:
            return end - start
        held = ring.held(start, end)
        return int(np.argmin(held)) if not held.all() else end - start

    def _restore_written_back(self) -> None:
        """Lay the values written back before the checkpoint over the steps read from the chunks."""
        path = self.folder / WRITTEN_BACK
        if not self.rewritable or not path.is_file():
            return
        try:
            with np.load(path, allow_pickle=False) as archive:
                start, steps = int(archive["start"]), {key: archive[key] for key in self.rewritable}
            envs = np.arange(self.replay.num_envs)
            self.replay.write_back(envs, np.full(len(envs), start), steps)
        except Exception as error:  # noqa: BLE001 - the chunks' own values stay
            warnings.warn(f"{path.name} is unreadable ({type(error).__name__}: {error}); resuming with the "
                          "replay values as first stored", ReverieWarning, stacklevel=3)

    def _chains(self, added: int) -> tuple[list[Chunk], list[Chunk]]:
        """Contiguous chunks ending at (or spanning) time `added`, newest first, and those
        continuing from it, oldest first."""
        chunks = self.chunks()
        by_start = {c.start: c for c in chunks}
        by_end = {c.end: c for c in chunks}
        spanning = next((c for c in chunks if c.start < added < c.end), None)
        before, after = [], []
        if spanning is not None:
            before.append(spanning)
            after.append(spanning)
        time = spanning.start if spanning else added
        while time in by_end and by_end[time].start < time:
            before.append(by_end[time])
            time = by_end[time].start
        time = spanning.end if spanning else added
        while time in by_start and by_start[time].end > time:
            after.append(by_start[time])
            time = by_start[time].end
        return before, after

    def _read(self, chunk: Chunk, start: int, end: int) -> dict[str, np.ndarray] | None:
        """Steps [start, end) of a chunk file, or None (with a warning) if it cannot be read."""
        try:
            with np.load(chunk.path, allow_pickle=False) as archive:
                steps = {key: archive[key] for key in archive.files}
            lengths = {array.shape[1] if array.ndim > 1 else -1 for array in steps.values()}
            if lengths != {chunk.end - chunk.start}:
                raise ValueError(f"arrays of {sorted(lengths)} steps, not {chunk.end - chunk.start}")
        except Exception as error:  # noqa: BLE001 - any unreadable chunk ends the chain
            warnings.warn(f"replay chunk {chunk.path.name} is unreadable ({type(error).__name__}: {error}); "
                          "the steps from there on are not restored", ReverieWarning, stacklevel=3)
            return None
        return {key: array[:, start - chunk.start:end - chunk.start] for key, array in steps.items()}
