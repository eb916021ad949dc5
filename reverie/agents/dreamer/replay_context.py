"""DreamerV3's replay context (official `replay_context: 1`): replayed sequences start from stored latents.

Without it every replayed sequence starts from the zero state, so the first steps of a window that
begins mid-episode are observed with no memory of what came before. With it, the policy stores for
each env step t the posterior state it reached after observing x_t,

    latent/deter   (D,) float16     h_t (the GRU state lies in [−1, 1]; float16 keeps 11 bits, finer
                                    than the bfloat16 the official code computes it in)
    latent/stoch   (S,) uint8       the class index of each one-hot z_t (categorical latents, K ≤ 256),
                   (S,) float16     z_t itself (Gaussian latents)
    latent/valid   () bool          False for a step stored without a latent (a random prefill step)

and a replayed window holds C = `replay.context` steps before the T it trains on. The update starts
from the stored latent of step C−1 and the action taken there (the initial state and a zero action
where no latent was stored), observes steps C … C+T−1, and returns the recomputed posteriors of
those T steps under `replay/` keys; the loop writes them back into replay, so the stored latents
follow the model as it learns (official `agent.py`: `replay_context`, the `replay` outputs of
`train`, written back by `stepid`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from reverie.agents.contract import WRITE_BACK_PREFIX, ReplayField
from reverie.agents.dreamer.rssm import RSSM

KEYS = ("latent/deter", "latent/stoch", "latent/valid")


def latent_fields(rssm: RSSM) -> dict[str, ReplayField]:
    """What the policy stores per step: {key: ReplayField(shape, numpy dtype)}."""
    S, K = rssm.latent_shape
    if not rssm.gaussian and K > 256:
        raise ValueError(f"replay context stores class indices as uint8: {K} classes per latent do not fit")
    stoch = ReplayField((S,), np.dtype(np.float16 if rssm.gaussian else np.uint8))
    return {"latent/deter": ReplayField((rssm.cfg.deter,), np.dtype(np.float16)), "latent/stoch": stoch,
            "latent/valid": ReplayField((), np.dtype(bool))}


def encode(rssm: RSSM, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The stored form of RSSM states {deter (…, D), stoch (…, S, K)}: {key: (…, ...)}."""
    stoch = state["stoch"].float()
    stoch = stoch[..., 0].half() if rssm.gaussian else stoch.argmax(-1).to(torch.uint8)  # (…, S)
    deter = state["deter"].half()
    return {"latent/deter": deter, "latent/stoch": stoch,
            "latent/valid": torch.ones(deter.shape[:-1], dtype=torch.bool, device=deter.device)}


def decode(rssm: RSSM, stored: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """RSSM states {deter (…, D), stoch (…, S, K)} float32 from their stored form."""
    stoch = stored["latent/stoch"]
    if rssm.gaussian:
        stoch = stoch.float().unsqueeze(-1)  # (…, S, 1)
    else:
        stoch = F.one_hot(stoch.long(), rssm.latent_shape[1]).float()  # (…, S, K)
    return {"deter": stored["latent/deter"].float(), "stoch": stoch}


def split(data: dict[str, torch.Tensor], context: int, initial: dict[str, torch.Tensor], rssm: RSSM):
    """A (B, C + T) batch → the carry before step C and the (B, T) steps to train on.

    carry: {deter, stoch, action} of step C−1 as stored (`initial` where no latent was stored)."""
    last = {key: value[:, context - 1] for key, value in data.items()}  # step C−1, (B, ...)
    stored = decode(rssm, last)
    stored["action"] = last["action"].float()
    valid = last["latent/valid"]  # (B,)
    carry = {key: torch.where(valid.view(-1, *[1] * (initial[key].dim() - 1)), stored[key], initial[key])
             for key in ("deter", "stoch", "action")}
    steps = {key: value[:, context:] for key, value in data.items() if key not in KEYS}
    return carry, steps


def write_back(rssm: RSSM, post: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The recomputed posteriors {deter (B, T, D), stoch (B, T, S, K)} as `replay/` outputs."""
    stored = encode(rssm, {key: post[key].detach() for key in ("deter", "stoch")})
    return {WRITE_BACK_PREFIX + key: value for key, value in stored.items()}
