"""Reverie: world-model reinforcement learning in PyTorch (DreamerV3 and its family)."""

__version__ = "0.1.0"
