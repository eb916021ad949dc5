"""Planning in a learnt world model: the cross-entropy method of PlaNet (`CEMPlanner`), the MPPI
of TD-MPC2 (`MPPIPlanner`, over any `LatentModel`) and batched tree search for discrete actions
(`muzero_search`, `gumbel_search`, over any `SearchModel`)."""

from .cem import CEMPlanner
from .gumbel import gumbel_search
from .joint_actions import JointActions
from .mppi import LatentModel, MPPIPlanner
from .puct import muzero_search
from .search import tree_search
from .tree import SearchModel, SearchResult, Tree

__all__ = ["CEMPlanner", "JointActions", "LatentModel", "MPPIPlanner", "SearchModel", "SearchResult", "Tree",
           "gumbel_search", "muzero_search", "tree_search"]
