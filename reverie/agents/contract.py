"""The contract between the run loop and an agent family (DESIGN §3).

The loop (`reverie.run`) drives every family through these calls and attributes only; it never
looks inside an agent. Shapes: N envs acting together, a replayed batch of B sequences of T steps.

    init_state(N)                   → the carried state of N envs (a dict of tensors)
    act(state, obs, mode)           → (state, action (N, A) float32, extras {key: (N, ...)})
                                      mode: "train" (explore), `eval_mode`, or "random"
    train_step(batch)               → metrics {name: 0-d tensor}; one update on a (B, C + T) batch,
                                      no host sync (the loop reads `train/nonfinite` later); keys
                                      under `replay/` are not metrics but per-step values
                                      (B, T, ...) of `replay_fields` for the batch's last T steps,
                                      which the loop writes back into replay
    report(batch, context)          → open-loop predictions: `openloop/{key}/truth|pred` (B, T, ...)
                                      and `openloop/{key}/mse` (0-d), or {} when it has none
    state_dict() / load_state_dict  → everything a checkpoint must restore (weights, optimisers,
                                      normalisers, target networks)

and what the loop must know to feed it:

    batch_size, sequence_length     → the (B, T) of the batches it trains on
    context_length                  → C: steps sampled before each sequence that it reads but does
                                      not train on (Dreamer's replay context: 1 or 0)
    replay_fields                   → {key: ReplayField} of the per-step extras `act` returns, stored
                                      in replay beside the observations (a search's visit
                                      distribution, Dreamer's latents for the replay context)
    eval_mode                       → the `act` mode evaluation uses ("eval": the policy's mode)
    obs_keys                        → the observation keys it reads (recorded episodes keep these)

A family is a class with this interface registered under a name (`reverie.agents.register`); the
config's `agent.family` picks it (`make_agent`). Planners (`reverie.planners`) are modules any
family can call from its `act`.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import torch

State = dict[str, torch.Tensor]
MODES = ("train", "eval", "random")
WRITE_BACK_PREFIX = "replay/"  # train_step's outputs that go back into replay, not into the metrics


class ReplayField(NamedTuple):
    """Shape (without the batch axis) and dtype of one per-step value an agent stores in replay."""

    shape: tuple[int, ...]
    dtype: np.dtype


@runtime_checkable
class Agent(Protocol):
    obs_space: dict[str, Any]
    act_space: Any
    batch_size: int
    sequence_length: int
    context_length: int
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
