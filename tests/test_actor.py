"""The actor's discrete policy: no uniform mix by default (current official DreamerV3, whose
`Head.categorical` never passes `unimix` to the policy's `outs.Categorical`), 1% in the 2023
preset (`actor.unimix: 0.01` applied in `Dist.inner` `onehot`)."""

from __future__ import annotations

import pytest
import torch

from reverie import config as C
from reverie.agents.dreamer.actor_critic import Actor
from reverie.envs.spaces import ActionSpace

SPACE = ActionSpace("discrete", sizes=(5, 3))


def actor_and_logits(presets):
    cfg = C.make_config(presets).behavior.actor
    torch.manual_seed(0)
    actor = Actor(8, SPACE, cfg, norm="rms", act="silu")
    feat = torch.randn(4, 8)
    raw = actor.raw(feat).detach()
    # outscale 0.01 makes the initial logits nearly uniform: scale them up, and add a row with
    # one dominant class per action dimension, whose other classes a mix would lift to ≥ u/K.
    peaked = torch.tensor([[30.0, 0.0, 0.0, 0.0, 0.0, 0.0, 30.0, 0.0]])
    return actor, cfg, torch.cat([100.0 * raw, peaked])


@pytest.mark.parametrize("presets", [[], ["dreamerv3"], ["dreamerv2"], ["dreamerv1"]])
def test_policy_without_unimix_is_the_plain_softmax(presets):
    actor, cfg, logits = actor_and_logits(presets)
    assert cfg.unimix == 0.0
    policy = actor.dist(logits)
    for part, x in zip(policy.parts, logits.split(SPACE.sizes, -1)):
        torch.testing.assert_close(part.probs, torch.softmax(x, -1), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(part.log_probs, torch.log_softmax(x, -1), rtol=1e-6, atol=1e-6)
        assert part.probs.min() < 1e-12  # no floor at u/K


def test_policy_of_the_2023_preset_mixes_one_percent_uniform():
    actor, cfg, logits = actor_and_logits(["dreamerv3_2023"])
    assert cfg.unimix == 0.01
    policy = actor.dist(logits)
    for part, x, k in zip(policy.parts, logits.split(SPACE.sizes, -1), SPACE.sizes):
        torch.testing.assert_close(part.probs, 0.99 * torch.softmax(x, -1) + 0.01 / k, rtol=1e-6, atol=1e-7)
        assert part.probs.min() >= 0.01 / k - 1e-7
