"""Planning in a learnt world model: the cross-entropy method of PlaNet (`CEMPlanner`)."""

from .cem import CEMPlanner

__all__ = ["CEMPlanner"]
