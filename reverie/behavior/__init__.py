"""Behaviour learning: the imagination actor-critic (and later, planners)."""

from .actor_critic import Actor, ActorCritic

__all__ = ["Actor", "ActorCritic"]
