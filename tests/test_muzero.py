"""The MuZero family: n-step targets by hand, the consistency loss's gradient routing, joint actions,
the target network, acting, checkpoints and the errors a user gets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from family_runs import train_then_resume
from toy_envs import DictObsEnv

from reverie import config as C
from reverie.agents import make_agent
from reverie.agents.muzero.agent import POLICY_KEY, NetworkSearchModel, scale_gradient
from reverie.agents.muzero.targets import unroll_targets, value_prefix_targets
from reverie.envs import make_env
from reverie.envs.spaces import ActionSpace
from reverie.errors import ConfigError
from reverie.planners.joint_actions import JointActions

SMALL = ["muzero.latent_dim=16", "muzero.mlp_dim=16", "muzero.projection_dim=16", "muzero.simulations=4",
         "batch_size=8"]


def make(env="CartPole-v1", overrides=()):
    cfg = C.make_config(C.compose_presets(["muzero"]), [*SMALL, *overrides])
    built = make_env(env, cfg.env)
    return make_agent(built.obs_space, built.act_space, cfg), built


def batch(B=8, T=11, seed=0):
    rng = np.random.default_rng(seed)
    return {"vector": rng.normal(size=(B, T, 4)).astype(np.float32),
            "action": np.eye(2, dtype=np.float32)[rng.integers(0, 2, (B, T))],
            "reward": np.ones((B, T), np.float32), "is_first": np.zeros((B, T), bool),
            "is_last": np.zeros((B, T), bool), "is_terminal": np.zeros((B, T), bool),
            POLICY_KEY: rng.dirichlet([1.0, 1.0], (B, T)).astype(np.float32)}


def targets_of(first=(), terminal=(), unset_policy=()):
    """One window of T = 4 (K = 1, n = 2, γ = 0.5): rewards r_j = j, bootstrap values v̄_j = 10(j + 1)."""
    T = 4
    is_first, is_terminal = torch.zeros(1, T, dtype=torch.bool), torch.zeros(1, T, dtype=torch.bool)
    is_first[0, list(first)], is_terminal[0, list(terminal)] = True, True
    policy = torch.full((1, T, 2), 0.5)
    policy[0, list(unset_policy)] = 0
    reward = torch.arange(T, dtype=torch.float32)[None]
    bootstrap = 10 * (torch.arange(T, dtype=torch.float32)[None] + 1)
    return unroll_targets(reward, is_first, is_terminal, bootstrap, policy, unroll=1, td_steps=2, discount=0.5)


def rows(t):
    return [[round(float(x), 6) for x in field[0]] for field in (t.value, t.value_mask, t.reward, t.reward_mask,
                                                                 t.policy_mask, t.observed)]


def test_n_step_targets_inside_one_episode():
    # z_0 = r_1 + ½ r_2 + ¼ v̄_2 = 1 + 1 + 7.5; z_1 = r_2 + ½ r_3 + ¼ v̄_3 = 2 + 1.5 + 10
    value, value_mask, reward, reward_mask, policy_mask, observed = rows(targets_of())
    assert value == [9.5, 13.5] and value_mask == [1, 1]
    assert reward == [0, 1] and reward_mask == [0, 1] and policy_mask == [1, 1] and observed == [1, 1]


def test_a_terminal_inside_the_window_ends_the_sum_and_the_bootstrap():
    # o_2 terminal: z_0 = r_1 + ½ r_2 (no bootstrap), z_1 = r_2
    value, value_mask, *_ = rows(targets_of(first=[3], terminal=[2]))
    assert value == [2.0, 2.0] and value_mask == [1, 1]
    # o_1 terminal: z_0 = r_1; step 1 is the terminal state itself: value 0, no policy target
    value, value_mask, reward, _, policy_mask, _ = rows(targets_of(first=[2], terminal=[1]))
    assert value == [1.0, 0.0] and value_mask == [1, 1] and reward == [0, 1] and policy_mask == [1, 0]


def test_a_time_limit_bootstraps_from_the_last_state_of_the_episode():
    # the episode is cut after o_1: z_0 = r_1 + ½ v̄_1, z_1 = v̄_1
    value, value_mask, *_ = rows(targets_of(first=[2]))
    assert value == [11.0, 20.0] and value_mask == [1, 1]


def test_past_the_end_is_absorbing_after_a_terminal_and_unknown_after_a_time_limit():
    value, value_mask, reward, reward_mask, policy_mask, observed = rows(targets_of(first=[1], terminal=[0]))
    assert value == [0, 0] and value_mask == [1, 1] and reward == [0, 0] and reward_mask == [0, 1]
    assert policy_mask == [0, 0] and observed == [1, 0]
    value, value_mask, reward, reward_mask, policy_mask, observed = rows(targets_of(first=[1]))
    assert value == [10.0, 0] and value_mask == [1, 0] and reward_mask == [0, 0] and policy_mask == [1, 0]


def test_steps_without_a_stored_search_policy_train_no_policy():
    *_, policy_mask, _ = rows(targets_of(unset_policy=[0]))
    assert policy_mask == [0, 1]


def test_a_window_too_short_for_the_targets_is_refused():
    with pytest.raises(ValueError, match="needs 4"):
        unroll_targets(torch.zeros(1, 3), torch.zeros(1, 3, dtype=torch.bool), torch.zeros(1, 3, dtype=torch.bool),
                       torch.zeros(1, 3), torch.zeros(1, 3, 2), unroll=1, td_steps=2, discount=0.5)


def test_joint_actions_of_a_multidiscrete_space_are_row_major():
    actions = JointActions((3, 4))
    assert actions.count == 12
    vector = actions.to_vector(torch.tensor([7]))
    assert vector.tolist() == [[0, 1, 0, 0, 0, 0, 1]]  # (1, 3)
    assert actions.from_vector(actions.to_vector(torch.arange(12))).tolist() == list(range(12))


def test_scale_gradient_keeps_the_value_and_scales_the_gradient():
    x = torch.tensor([2.0, -3.0], requires_grad=True)
    y = scale_gradient(x, 0.5)
    y.sum().backward()
    assert y.tolist() == [2.0, -3.0] and x.grad.tolist() == [0.5, 0.5]


def test_the_consistency_loss_trains_the_online_branch_only():
    agent, _ = make()
    data = {k: torch.as_tensor(v) for k, v in batch().items()}
    obs = {"vector": data["vector"].clone().requires_grad_(True)}
    agent.losses(data, obs)["consistency"].backward()
    grad = obs["vector"].grad
    assert grad[:, 0].abs().sum() > 0  # o_t → h → g … → projector → predictor
    assert torch.all(grad[:, 1:] == 0)  # the target branch h(o_{t+k}) is stop-gradient
    net = agent.net
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.projection.predictor.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.dynamics_net.parameters())
    for module in (net.reward_net, net.prediction_trunk, net.policy_head, net.value_head):
        assert all(p.grad is None for p in module.parameters())


def test_every_loss_reaches_the_representation_and_none_reaches_the_target_network():
    agent, _ = make()
    agent.train_step(batch(seed=1))  # the heads' output layers start at zero and pass no gradient back
    data = {k: torch.as_tensor(v) for k, v in batch().items()}
    losses = agent.losses(data, {"vector": data["vector"]})
    assert set(losses) == {"policy", "value", "reward", "consistency"}
    for name, loss in losses.items():
        agent.zero_grad(set_to_none=True)
        loss.backward(retain_graph=True)
        first = agent.net.representation_net.out.weight.grad
        assert first is not None and first.abs().sum() > 0, name
        assert all(p.grad is None for p in agent.target_net.parameters())


def test_the_target_network_is_a_hard_copy_every_target_update_updates():
    agent, _ = make(overrides=["muzero.target_update=2"])
    start = [p.clone() for p in agent.target_net.parameters()]
    agent.train_step(batch())
    assert all(torch.equal(a, b) for a, b in zip(start, agent.target_net.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(agent.net.parameters(), agent.target_net.parameters()))
    agent.train_step(batch(seed=1))
    assert all(torch.equal(a, b) for a, b in zip(agent.net.parameters(), agent.target_net.parameters()))


def test_a_non_finite_batch_skips_the_update():
    agent, _ = make()
    before = [p.clone() for p in agent.parameters()]
    data = batch()
    data["reward"][0, 3] = np.nan
    metrics = agent.train_step(data)
    assert metrics["train/nonfinite"] == 1 and int(agent.updates) == 0
    assert all(torch.equal(a, b) for a, b in zip(before, agent.parameters()))


def test_updates_fit_a_fixed_batch():
    torch.manual_seed(0)
    agent, _ = make()
    data = batch()
    first = agent.train_step(data)["loss/total"]
    for _ in range(30):
        last = agent.train_step(data)["loss/total"]
    assert last < 0.5 * first


def test_reanalyse_replaces_the_policy_targets_of_its_fraction_of_the_batch():
    agent, _ = make(overrides=["muzero.reanalyse=0.25"])
    data = {k: torch.as_tensor(v) for k, v in batch().items()}
    stored = data[POLICY_KEY]
    fresh = agent.reanalysed_policy({"vector": data["vector"]}, stored)
    assert not torch.allclose(fresh[:2, :6], stored[:2, :6])  # rows 0, 1 (a quarter of 8), steps 0 … K
    assert torch.equal(fresh[2:], stored[2:]) and torch.equal(fresh[:, 6:], stored[:, 6:])
    assert torch.allclose(fresh[:2, :6].sum(-1), torch.ones(2, 6))


@pytest.mark.parametrize("search", ["muzero", "gumbel"])
def test_acting_searches_and_stores_the_search_policy(search):
    agent, _ = make(overrides=[f"muzero.search={search}"])
    obs = {"vector": np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32),
           "is_first": np.ones(3, bool)}
    state, action, extras = agent.act(agent.init_state(3), obs, "train")
    assert action.shape == (3, 2) and np.all(action.sum(-1) == 1)
    assert extras[POLICY_KEY].shape == (3, 2) and np.allclose(extras[POLICY_KEY].sum(-1), 1)
    greedy = [agent.act(state, obs, "eval")[1] for _ in range(2)]
    assert np.array_equal(*greedy)


def test_a_checkpoint_round_trip_gives_the_same_next_update():
    agent, _ = make()
    agent.train_step(batch())
    other, _ = make(overrides=["seed=1"])
    other.load_state_dict(agent.state_dict())
    a, b = agent.train_step(batch(seed=2)), other.train_step(batch(seed=2))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(("env", "overrides", "message"), [
    ("Pendulum-v1", (), "needs a discrete action space"),
    ("CartPole-v1", ("batch_length=12",), "set batch_length=11"),
])
def test_what_it_cannot_serve_is_one_clear_error(env, overrides, message):
    with pytest.raises(ConfigError, match=message):
        make(env, overrides)


def test_images_and_vectors_with_multidiscrete_actions_act_and_train():
    cfg = C.make_config(C.compose_presets(["muzero"]), SMALL)
    obs_space = make_env(DictObsEnv, cfg.env).obs_space  # a 16×16 RGB image and a 3-vector
    agent = make_agent(obs_space, ActionSpace("discrete", sizes=(3, 2), shape=(2,)), cfg)
    assert agent.net.representation_net.image_keys == ["image"]
    rng = np.random.default_rng(0)
    obs = {"image": rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8),
           "state": rng.normal(size=(2, 3)).astype(np.float32), "is_first": np.ones(2, bool)}
    _, action, extras = agent.act(agent.init_state(2), obs, "train")
    assert action.shape == (2, 5) and action[:, :3].sum(-1).tolist() == [1, 1] and extras[POLICY_KEY].shape == (2, 6)
    data = batch()
    data.update(image=rng.integers(0, 256, (8, 11, 16, 16, 3), dtype=np.uint8), state=data.pop("vector")[..., :3],
                action=np.concatenate([np.eye(3)[rng.integers(0, 3, (8, 11))], np.eye(2)[rng.integers(0, 2, (8, 11))]],
                                      -1).astype(np.float32),
                **{POLICY_KEY: rng.dirichlet(np.ones(6), (8, 11)).astype(np.float32)})
    metrics = agent.train_step(data)
    assert metrics["train/nonfinite"] == 0 and agent.net.representation_net.cnn.net[0].weight.grad is not None


def test_a_short_run_trains_evaluates_and_resumes(tmp_path):
    fast = {"run.train_ratio": 88, "run.eval_every": 0, "run.eval_episodes": 1, "env.num_envs": 2,
            "env.parallel": False, "run.report_every": 0, "run.log_every": 0, "replay.chunk_length": 50,
            **dict(item.split("=") for item in SMALL)}
    train_then_resume(tmp_path, "CartPole-v1", "muzero", 120, 160, fast)


def test_dreamer_size_presets_leave_the_muzero_widths_alone():
    # size presets set every "*.units", "*.layers" and "*.depth" key: the muzero section has none
    for size in ("debug", "size1m", "size12m"):
        c = C.make_config(C.compose_presets(["muzero", size])).muzero
        assert (c.mlp_dim, c.mlp_layers, c.latent_dim, c.cnn_depth) == (128, 2, 128, 32)


def test_value_prefix_targets_sum_the_rewards_since_each_restart():
    reward = torch.tensor([[0.0, 1, 2, 3, 4, 5]])  # u_1 … u_5
    assert value_prefix_targets(reward, 2).tolist() == [[0, 1, 3, 3, 7, 5]]
    assert value_prefix_targets(reward, 5).tolist() == [[0, 1, 3, 6, 10, 15]]


def test_with_a_value_prefix_the_search_rewards_are_prefix_differences_that_restart():
    agent, _ = make(overrides=["muzero.value_prefix=true", "muzero.prefix_horizon=2", "muzero.lstm_dim=8"])
    agent.train_step(batch())  # the reward head's output layer starts at zero
    net = agent.net
    model = NetworkSearchModel(net, 0.9, prefix_horizon=2)
    s = net.represent({"vector": torch.randn(3, 4)})
    node, rewards, prefixes, carry, latent = model.root(s), [], [], None, s
    for depth in range(3):
        action = torch.full((3,), depth % 2)
        node, reward, discount = model.step(node, action)
        latent, logits, carry = net.dynamics(latent, action, carry)
        prefixes.append(net.twohot(logits).mean())
        rewards.append(reward)
        if depth == 1:  # depth 2 is a multiple of the horizon: the prefix and the LSTM restart
            assert torch.all(node["h"] == 0) and torch.all(node["prefix"] == 0)
            carry = None
        assert torch.allclose(discount, torch.full((3,), 0.9))
    assert torch.allclose(rewards[0], prefixes[0]) and torch.allclose(rewards[1], prefixes[1] - prefixes[0])
    assert torch.allclose(rewards[2], prefixes[2])  # after the restart the parent's prefix is 0
    metrics = agent.train_step(batch(seed=3))
    assert metrics["train/nonfinite"] == 0 and agent.net.prefix_cell.weight_ih.grad.abs().sum() > 0
