"""Planning in a learnt world model: the cross-entropy method of PlaNet (`CEMPlanner`) and the MPPI
of TD-MPC2 (`MPPIPlanner`, over any `LatentModel`)."""

from .cem import CEMPlanner
from .mppi import LatentModel, MPPIPlanner

__all__ = ["CEMPlanner", "LatentModel", "MPPIPlanner"]
