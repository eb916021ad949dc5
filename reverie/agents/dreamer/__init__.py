"""The Dreamer family: DreamerV3 (current and 2023), DreamerV2, Dreamer v1 and PlaNet."""

from reverie.agents.dreamer.agent import DreamerAgent

__all__ = ["DreamerAgent"]
