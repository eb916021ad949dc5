"""The CEM planner on a toy world model with a known optimum, and on a real Reverie world model."""

from __future__ import annotations

import pytest
import torch
from test_agent import make_agent
from toy_envs import CueEnv

from reverie import config as C
from reverie.agent import Agent
from reverie.envs import make_env
from reverie.envs.spaces import ActionSpace
from reverie.planning import CEMPlanner


class Scalar:
    def __init__(self, value: torch.Tensor):
        self.value = value

    def mean(self) -> torch.Tensor:
        return self.value


class PointWorld:
    """A point moved by the actions: x' = x + move(a); reward −‖x' − target‖² (or 0 with
    `flat`). The target rides along in the state's "stoch" so every start can have its own.
    Discrete actions move by −1, 0, +1 per sub-action of 3 classes."""

    def __init__(self, discrete: bool = False, flat: bool = False):
        self.rssm, self.discrete, self.flat = self, discrete, flat

    def imagine_step(self, state, action):
        move = action.unflatten(-1, (-1, 3)) @ torch.tensor([-1.0, 0.0, 1.0]) if self.discrete else action
        return {"deter": state["deter"] + move, "stoch": state["stoch"]}

    def features(self, state):
        return torch.cat([state["deter"], state["stoch"].flatten(1)], -1)

    def reward(self, feat):
        position, target = feat.chunk(2, -1)
        value = -(position - target).square().sum(-1)
        return Scalar(torch.zeros_like(value) if self.flat else value)


def space(discrete: bool, dim: int = 1, sizes=()) -> ActionSpace:
    if discrete:
        return ActionSpace("discrete", sizes=tuple(sizes), shape=(len(sizes),))
    return ActionSpace("continuous", low=(-1.0,) * dim, high=(1.0,) * dim, shape=(dim,))


def starts(targets) -> dict[str, torch.Tensor]:
    targets = torch.tensor(targets, dtype=torch.float32)  # (N, A)
    return {"deter": torch.zeros_like(targets), "stoch": targets.unsqueeze(-1)}


def test_continuous_plans_head_for_each_start_states_own_target():
    planner = CEMPlanner(space(False), horizon=5, candidates=300, iterations=8, top_k=30)
    action = planner.plan(PointWorld(), starts([[2.5], [-0.3]]))
    assert action.shape == (2, 1) and bool((action.abs() <= 1).all())
    assert action[0, 0] > 0.9  # far away: full speed
    assert abs(float(action[1, 0]) + 0.3) < 0.15  # near: the step that lands on it


def test_more_iterations_get_closer_to_the_optimum_than_random_shooting():
    def error(iterations: int) -> float:
        torch.manual_seed(0)
        planner = CEMPlanner(space(False, 2), horizon=3, candidates=200, iterations=iterations, top_k=20)
        action = planner.plan(PointWorld(), starts([[0.4, -0.6]] * 16))
        return float((action - torch.tensor([0.4, -0.6])).norm(dim=-1).mean())

    assert error(10) < 0.5 * error(1)


@pytest.mark.parametrize("sizes, targets, expected", [
    ((3,), [[2.0]], [0, 0, 1]),
    ((3,), [[-3.0]], [1, 0, 0]),
    ((3, 3), [[0.0, 2.0]], [0, 1, 0, 0, 0, 1]),
])
def test_discrete_plans_are_one_hot_per_sub_action_and_pick_the_rewarding_move(sizes, targets, expected):
    planner = CEMPlanner(space(True, sizes=sizes), horizon=3, candidates=200, iterations=5, top_k=20)
    action = planner.plan(PointWorld(discrete=True), starts(targets))
    assert action.tolist() == [expected]


def test_a_value_at_the_horizon_decides_when_the_reward_is_flat():
    planner = CEMPlanner(space(False), horizon=4, candidates=200, iterations=6, top_k=20)
    world = PointWorld(flat=True)
    up = planner.plan(world, starts([[0.0]]), value_fn=lambda feat: feat[:, 0])
    down = planner.plan(world, starts([[0.0]]), value_fn=lambda feat: -feat[:, 0])
    assert up[0, 0] > 0.5 and down[0, 0] < -0.5


def test_same_seed_same_plan():
    planner = CEMPlanner(space(False, 2), horizon=4, candidates=64, iterations=3, top_k=8)
    plans = []
    for _ in range(2):
        torch.manual_seed(3)
        plans.append(planner.plan(PointWorld(), starts([[0.5, 0.1]])))
    assert torch.equal(*plans)


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="1 ≤ top_k ≤ candidates"):
        CEMPlanner(space(False), candidates=10, top_k=20)


@pytest.mark.parametrize("env", ["Pendulum-v1", "cue"])
def test_plans_with_a_real_world_model(env):
    if env == "cue":
        agent, _, _ = make_agent(lambda: CueEnv())
    else:
        cfg = C.make_config(C.compose_presets(["planet", "debug"]))
        built = make_env(env, cfg.env)
        agent = Agent(built.obs_space, built.act_space, cfg)
    planner = CEMPlanner(agent.act_space, horizon=3, candidates=16, iterations=2, top_k=4)
    state = {k: v for k, v in agent.init_state(3).items() if k != "action"}
    action = planner.plan(agent.wm, state)
    assert action.shape == (3, agent.act_space.dim)
    if agent.act_space.discrete:
        assert bool((action.sum(-1) == len(agent.act_space.sizes)).all())
    else:
        assert bool((action.abs() <= 1).all())
