"""Replay: the sequence buffer agents train on, and its chunk files on disk (resume after a crash)."""

from reverie.replay.buffer import Replay
from reverie.replay.store import ReplayStore

__all__ = ["Replay", "ReplayStore"]
