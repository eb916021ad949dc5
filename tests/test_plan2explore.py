"""Plan2Explore (`behavior.explore`, reverie/agents/dreamer/explore.py): the ensemble's disagreement,
which loss trains which modules, the preset on top of the agent presets, which actor acts, and
checkpoints."""

import io
import math

import numpy as np
import pytest
import torch
from test_agent import random_batch
from toy_envs import CueEnv

from reverie import config as C
from reverie.agents.dreamer import DreamerAgent
from reverie.agents.dreamer.explore import Ensemble, Plan2Explore
from reverie.envs import make_env


def make_agent(env_fn, presets=("dreamerv3",), overrides=()):
    cfg = C.make_config(C.compose_presets([*presets, "plan2explore", "debug"]), list(overrides))
    env = make_env(env_fn, cfg.env)
    return DreamerAgent(env.obs_space, env.act_space, cfg), env, cfg


def _touched(module):
    return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_disagreement_is_larger_on_unseen_inputs_than_on_trained_ones():
    torch.manual_seed(0)
    ensemble = Ensemble(in_features=6 + 2, out_features=4, members=4, units=32, layers=1)
    feat, action, stoch = torch.randn(4, 5, 6), torch.randn(4, 5, 2), torch.randn(4, 5, 4)
    trained = ensemble.inputs(feat, action)[:, :-1]  # the inputs the loss fits z_{t+1} from
    unseen = torch.randn(512, 8)
    before = ensemble.disagreement(trained).mean()
    optimizer = torch.optim.Adam(ensemble.parameters(), lr=1e-2)
    for _ in range(200):
        optimizer.zero_grad()
        ensemble.loss(feat, action, stoch).mean().backward()
        optimizer.step()
    with torch.no_grad():
        seen_disag, unseen_disag = ensemble.disagreement(trained).mean(), ensemble.disagreement(unseen).mean()
    assert ensemble.loss(feat, action, stoch).mean() < 0.05  # every member fits the training set
    assert seen_disag < 0.2 * before and seen_disag < 0.2 * unseen_disag


def test_intrinsic_reward_is_the_std_over_members_averaged_over_dims():
    ensemble = Ensemble(in_features=6 + 2, out_features=2, members=3, units=8, layers=1)
    with torch.no_grad():
        for member, bias in zip(ensemble.members, ([0.0, 0.0], [1.0, 2.0], [2.0, 4.0])):
            member[-1].weight.zero_()  # member k predicts its bias everywhere
            member[-1].bias.copy_(torch.tensor(bias))
    feat, action = torch.randn(2, 4, 6), torch.randn(2, 4, 2)  # an imagined (N, H+1) trajectory
    reward = ensemble.reward(None, feat, action)
    # dim 0: {0, 1, 2} → population std √(2/3); dim 1: {0, 2, 4} → √(8/3); the mean of the two
    expected = (math.sqrt(2 / 3) + math.sqrt(8 / 3)) / 2
    assert reward.shape == (2, 4)
    assert torch.allclose(reward, torch.full((2, 4), expected))
    assert ensemble.predict(ensemble.inputs(feat, action)).shape == (3, 2, 4, 2)


MODULES = {  # name → the module of a Plan2Explore agent
    "wm": lambda a: a.wm, "actor": lambda a: a.ac.actor, "critic": lambda a: a.ac.critic,
    "expl_actor": lambda a: a.ac.explorer.actor, "expl_critic": lambda a: a.ac.explorer.critic,
    "expl_critic_disag": lambda a: a.ac.explorer.intrinsic["disag"]["critic"], "ensemble": lambda a: a.ac.ensemble,
}
TRAINS = {"ensemble": "ensemble", "expl_policy": "expl_actor", "policy": "actor", "expl_value": "expl_critic",
          "expl_value_disag": "expl_critic_disag", "value": "critic"}  # loss → the one module it moves


@pytest.mark.parametrize("env_fn, presets, routed", [
    (lambda: CueEnv(), ("dreamerv3",), False),  # REINFORCE under one LaProp: the plain backward of each loss
    ("Pendulum-v1", ("dreamerv3_2023",), True),  # dynamics backprop under Adam ×6: the agent's routed backward
])
def test_each_loss_trains_only_its_own_modules(env_fn, presets, routed):
    agent, env, cfg = make_agent(env_fn, presets)
    batch = random_batch(env, cfg)
    for _ in range(2):  # heads no longer zero-initialised
        agent.train_step(batch)
    assert agent.route_gradients == routed
    losses, _ = agent.compute_losses(agent.to_tensors(random_batch(env, cfg, seed=1)))
    for loss, owner in TRAINS.items():
        agent.zero_grad(set_to_none=True)
        if routed:
            scaled = {loss: losses[loss].float().mean()}
            agent.backward(scaled, scaled[loss])
        else:
            losses[loss].mean().backward(retain_graph=True)
        assert _touched(MODULES[owner](agent)), loss
        others = [name for name, module in MODULES.items() if name != owner and _touched(module(agent))]
        assert not others, f"{loss} moved {others}"
    assert not any(p.requires_grad for p in agent.ac.explorer.intrinsic["disag"]["slow_critic"].parameters())


@pytest.mark.parametrize("agent_preset", ["dreamerv3", "dreamerv3_2023", "dreamerv2", "dreamerv1"])
def test_the_preset_sets_only_the_explore_switch_on_any_agent_preset_in_any_order(agent_preset):
    plain = C.make_config(C.compose_presets([agent_preset, "debug"]))
    assert not plain.behavior.explore.enabled
    for order in ([agent_preset, "plan2explore", "debug"], ["plan2explore", agent_preset, "debug"]):
        cfg = C.make_config(C.compose_presets(order))
        assert cfg.behavior.explore.enabled
        cfg.behavior.explore.enabled = False
        assert cfg == plain
    assert C.compose_presets(["plan2explore"]) == ["dreamerv3", "classic", "plan2explore"]


@pytest.mark.parametrize("env_fn, presets", [
    (lambda: CueEnv(), ("dreamerv3",)), ("Pendulum-v1", ("dreamerv3",)),
    (lambda: CueEnv(), ("dreamerv3_2023",)), ("Pendulum-v1", ("dreamerv3_2023",)),
    ("Pendulum-v1", ("dreamerv1",)),  # Gaussian latents, tanh-Normal actions
])
def test_a_train_step_trains_both_actors_and_the_ensemble_with_finite_metrics(env_fn, presets):
    agent, env, cfg = make_agent(env_fn, presets)
    assert isinstance(agent.ac, Plan2Explore) and agent.act_space.discrete == (env_fn != "Pendulum-v1")
    before = {name: [p.detach().clone() for p in module(agent).parameters()] for name, module in MODULES.items()}
    batch = random_batch(env, cfg)
    for _ in range(2):  # LaProp's warm-up starts at lr 0
        metrics = agent.train_step(batch)
    assert all(v.shape == () and torch.isfinite(v) for v in metrics.values())
    for key in ("loss/policy", "loss/value", "loss/expl_policy", "loss/expl_value", "loss/expl_value_disag",
                "loss/ensemble", "expl/imag/reward_disag", "expl/imag/return_disag", "expl/imag/return"):
        assert key in metrics, key
    assert metrics["expl/imag/reward_disag"] > 0 and metrics["train/nonfinite"] == 0
    for name, module in MODULES.items():
        moved = any(not torch.equal(a, b) for a, b in zip(before[name], module(agent).parameters()))
        assert moved, name


def test_eval_takes_the_task_actor_and_training_the_explorer_until_its_steps():
    agent, env, _ = make_agent(lambda: CueEnv(), overrides=["behavior.explore.until=10"])
    with torch.no_grad():  # the task actor's mode is action 1, the explorer's action 0
        for actor, bias in ((agent.ac.actor, [0.0, 5.0]), (agent.ac.explorer.actor, [5.0, 0.0])):
            actor.logits.weight.zero_()
            actor.logits.bias.copy_(torch.tensor(bias))
    obs = {k: np.stack([v] * 4) for k, v in env.reset().items()}
    _, action, _ = agent.act(agent.init_state(4), obs, agent.eval_mode)
    assert np.allclose(action, np.tile([0.0, 1.0], (4, 1)))  # the mode (one-hot up to the straight-through term)
    assert agent.behavior_for(agent.eval_mode, 4) is agent.ac.actor and agent.ac.steps == 0  # eval steps don't count
    picked = [agent.behavior_for("train", 4) for _ in range(4)]  # before each: 0, 4, 8, 12 train steps
    assert [a is agent.ac.explorer.actor for a in picked] == [True, True, True, False]
    always, _, _ = make_agent(lambda: CueEnv())  # until 0: the whole run
    assert all(always.behavior_for("train", 1000) is always.ac.explorer.actor for _ in range(5))


def test_act_in_training_samples_from_the_explorer_until_its_steps():
    agent, env, _ = make_agent(lambda: CueEnv(), overrides=["behavior.explore.until=8"])
    with torch.no_grad():  # near-deterministic policies: the task actor picks action 1, the explorer action 0
        for actor, bias in ((agent.ac.actor, [0.0, 50.0]), (agent.ac.explorer.actor, [50.0, 0.0])):
            actor.logits.weight.zero_()
            actor.logits.bias.copy_(torch.tensor(bias))
    state = agent.init_state(4)
    obs = {k: np.stack([v] * 4) for k, v in env.reset().items()}
    actions = []
    for _ in range(3):
        state, action, _ = agent.act(state, obs, "train")
        actions.append(action.argmax(-1).tolist())
    if agent.ac.steps == 0:
        pytest.skip("DreamerAgent.act does not call behavior_for(mode, N) yet")
    assert actions == [[0] * 4, [0] * 4, [1] * 4] and agent.ac.steps == 12


@pytest.mark.parametrize("presets", [("dreamerv3",), ("dreamerv3_2023",)])
def test_checkpoint_round_trip_restores_explorer_ensemble_optimisers_and_the_step_count(presets):
    agent, env, cfg = make_agent(lambda: CueEnv(), presets, ["behavior.explore.until=100"])
    batch = random_batch(env, cfg)
    agent.train_step(batch)
    agent.behavior_for("train", 7)
    buffer = io.BytesIO()
    torch.save(agent.state_dict(), buffer)  # as run/checkpoint.py writes and reads it
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    keys = state["modules"].keys()
    for prefix in ("ac.ensemble.members.7.", "ac.explorer.actor.", "ac.explorer.intrinsic.disag.slow_critic.",
                   "ac.explorer.intrinsic.disag.retnorm.", "ac.explorer.slow_critic."):
        assert any(k.startswith(prefix) for k in keys), prefix
    clone, _, _ = make_agent(lambda: CueEnv(), presets, ["behavior.explore.until=100"])
    clone.load_state_dict(state)
    assert clone.ac.steps == 7
    assert set(clone.optimizers) == set(agent.optimizers)
    torch.manual_seed(5)
    a = agent.train_step(batch)
    torch.manual_seed(5)
    b = clone.train_step(batch)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    for (name, p), q in zip(agent.state_dict()["modules"].items(), clone.state_dict()["modules"].values()):
        assert name == "ac._extra_state" or torch.equal(p, q), name
