"""Tree search over Dreamer's world model: the search model's prior, rewards and discounts, acting
with `behavior.planner.kind=search`, `reverie eval --search` on a trained run, and the errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from toy_envs import CueEnv

import reverie
from reverie import config as C
from reverie.agents.dreamer import DreamerAgent
from reverie.agents.dreamer.planning import RSSMSearchModel
from reverie.envs import make_env
from reverie.envs.spaces import ActionSpace
from reverie.errors import ConfigError, UserError
from reverie.planners import JointActions

SEARCH = ["behavior.kind=planner", "behavior.planner.kind=search", "behavior.planner.value=true",
          "behavior.planner.simulations=4"]


def agent_for(act_space, overrides=()):
    cfg = C.make_config(C.compose_presets(["debug"]), list(overrides))
    obs_space = make_env(CueEnv, cfg.env).obs_space
    return DreamerAgent(obs_space, act_space, cfg)


@pytest.mark.parametrize("contdisc", [True, False])
def test_the_search_model_gives_joint_priors_rewards_and_discounts(contdisc):
    agent = agent_for(ActionSpace("discrete", sizes=(3, 2), shape=(2,)), [f"model.contdisc={str(contdisc).lower()}"])
    actions = JointActions((3, 2))
    model = RSSMSearchModel(agent.wm, agent.ac, actions)
    torch.manual_seed(0)
    state = agent.wm.initial(5, agent.device)
    state = {"deter": torch.randn_like(state["deter"]), "stoch": state["stoch"]}
    logits, value = model.predict(state)
    feat = agent.wm.features(state)
    parts = agent.ac.actor(feat).parts
    expected = parts[0].probs[:, :, None] * parts[1].probs[:, None, :]  # (5, 3, 2): p(a₀)·p(a₁)
    assert torch.allclose(logits.exp(), expected.reshape(5, 6), atol=1e-6)
    assert torch.allclose(value, agent.ac.critic(feat).mean())
    torch.manual_seed(1)
    nxt, reward, discount = model.step(state, torch.tensor([0, 1, 2, 3, 5]))
    torch.manual_seed(1)
    same = agent.wm.rssm.imagine_step(state, actions.to_vector(torch.tensor([0, 1, 2, 3, 5])))
    assert torch.equal(nxt["deter"], same["deter"])
    cont = agent.wm.cont(agent.wm.features(nxt)).mean()
    assert torch.allclose(discount, cont if contdisc else agent.wm.discount * cont)
    assert torch.allclose(reward, agent.wm.reward(agent.wm.features(nxt)).mean())


def test_a_search_agent_acts_with_one_hot_actions():
    agent = agent_for(make_env(CueEnv).act_space, SEARCH)
    obs = {"vector": np.zeros((3, 2), np.float32), "is_first": np.ones(3, bool)}
    for mode in ("train", "eval"):
        _, action, _ = agent.act(agent.init_state(3), obs, mode)
        assert action.shape == (3, 2) and np.all(action.sum(-1) == 1)


def test_a_search_without_an_actor_and_critic_or_on_box_actions_is_one_clear_error():
    with pytest.raises(ConfigError, match="needs behavior.planner.value=true"):
        C.make_config(C.compose_presets(["debug"]), SEARCH[:2])
    with pytest.raises(ConfigError, match="plans discrete actions"):
        agent_for(ActionSpace("continuous", low=(-1.0,), high=(1.0,), shape=(1,)), SEARCH)


def test_eval_with_search_uses_the_same_checkpoint_and_says_so(tmp_path):
    logdir = tmp_path / "run"
    reverie.train("toy_envs:CueEnv", logdir=logdir, presets=["debug"], steps=150, progress=False)
    plain = reverie.evaluate(logdir, episodes=2)
    searched = reverie.evaluate(logdir, episodes=2, search=4)
    assert np.isfinite(plain["return_mean"]) and np.isfinite(searched["return_mean"])
    rows = json.loads((logdir / "eval.json").read_text())
    assert [r.get("search") for r in rows[-2:]] == [None, 4] and rows[-1]["step"] == rows[-2]["step"]
    with pytest.raises(UserError, match="must be ≥ 1"):
        reverie.evaluate(logdir, episodes=1, search=-1)
