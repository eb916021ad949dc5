"""The contract between the run loop and an agent family (DESIGN §3).

The loop (`reverie.run`) drives every family through these calls and attributes only; it never
looks inside an agent. Shapes: N envs acting together, a replayed batch of B sequences of T steps.

    init_state(N)                   → the carried state of N envs (a dict of tensors)
    act(state, obs, mode)           → (state, action (N, A) float32, extras {key: (N, ...)})
                                      mode: "train" (explore), `eval_mode`, or "random"
    train_step(batch)               → metrics {name: 0-d tensor}; one update on a (B, T) batch,
                                      no host sync (the loop reads `train/nonfinite` later)
    report(batch, context)          → open-loop predictions: `openloop/{key}/truth|pred` (B, T, ...)
                                      and `openloop/{key}/mse` (0-d), or {} when it has none
    state_dict() / load_state_dict  → everything a checkpoint must restore (weights, optimisers,
                                      normalisers, target networks)

and what the loop must know to feed it:

    batch_size, sequence_length     → the (B, T) of the batches it trains on
    replay_fields                   → {key: ArraySpec} of the per-step extras `act` returns, stored
                                      in replay beside the observations (e.g. a search's visit
                                      distribution); {} for Dreamer
    eval_mode                       → the `act` mode evaluation uses ("eval": the policy's mode)
    obs_keys                        → the observation keys it reads (recorded episodes keep these)

A family is a class with this interface registered under a name (`reverie.agents.register`); the
config's `agent.family` picks it (`make_agent`). Planners (`reverie.planners`) are modules any
family can call from its `act`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

State = dict[str, torch.Tensor]
MODES = ("train", "eval", "random")


@runtime_checkable
class Agent(Protocol):
    obs_space: dict[str, Any]
    act_space: Any
    batch_size: int
    sequence_length: int
    replay_fields: dict[str, Any]
    eval_mode: str
    obs_keys: list[str]

    def init_state(self, batch_size: int) -> State: ...

    def act(self, state: State, obs: dict[str, np.ndarray], mode: str = "train"
            ) -> tuple[State, np.ndarray, dict[str, np.ndarray]]: ...

    def train_step(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]: ...

    def report(self, batch: dict[str, np.ndarray], context: int = 5) -> dict[str, torch.Tensor]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> Any: ...
