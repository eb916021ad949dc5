"""Running agents: the training loop, evaluation and checkpoints."""

from .evaluate import run_episodes
from .train import Trainer, train

__all__ = ["Trainer", "train", "run_episodes"]
