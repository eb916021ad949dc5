"""The CEM planner on a toy world model with a known optimum, and on real Reverie world models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from toy_envs import CueEnv

from reverie import config as C
from reverie.agents.dreamer import DreamerAgent
from reverie.envs import make_env
from reverie.envs.spaces import ActionSpace
from reverie.planners import CEMPlanner


class Scalar:
    def __init__(self, value: torch.Tensor):
        self.value = value

    def mean(self) -> torch.Tensor:
        return self.value


class PointWorld:
    """A point moved by the actions, one coordinate per action dim or discrete sub-action:
    x' = x + a (continuous) or + linspace(−1, 1, n)[class] (a block of n classes: n = 3 moves
    −1, 0, +1). The target g rides along in "stoch" so every start state has its own.
    Reward of a state: −‖x − g‖² ("target"), 0 ("flat") or Σx ("height"); continue: 1, or
    [x ≤ cliff] with a cliff."""

    def __init__(self, sizes=(), reward="target", cliff=None):
        self.rssm, self.sizes, self.kind, self.cliff = self, tuple(sizes), reward, cliff

    def imagine_step(self, state, action):
        if self.sizes:
            blocks = action.split(self.sizes, -1)
            move = torch.stack([b @ torch.linspace(-1.0, 1.0, b.shape[-1]) for b in blocks], -1)
        else:
            move = action
        return {"deter": state["deter"] + move, "stoch": state["stoch"]}

    def features(self, state):
        return torch.cat([state["deter"], state["stoch"].flatten(1)], -1)

    def reward(self, feat):
        position, target = feat.chunk(2, -1)
        value = {"target": -(position - target).square().sum(-1), "flat": torch.zeros_like(position[:, 0]),
                 "height": position.sum(-1)}[self.kind]
        return Scalar(value)

    def cont(self, feat):
        position = feat.chunk(2, -1)[0].sum(-1)
        return Scalar(torch.ones_like(position) if self.cliff is None else (position <= self.cliff).float())


def space(dim: int = 1, sizes=()) -> ActionSpace:
    if sizes:
        return ActionSpace("discrete", sizes=tuple(sizes), shape=(len(sizes),))
    return ActionSpace("continuous", low=(-1.0,) * dim, high=(1.0,) * dim, shape=(dim,))


def starts(targets) -> dict[str, torch.Tensor]:
    targets = torch.tensor(targets, dtype=torch.float32)  # (N, dims)
    return {"deter": torch.zeros_like(targets), "stoch": targets.unsqueeze(-1)}


def test_cem_improves_over_iterations_to_the_analytic_optimum_and_beats_random_shooting():
    # 3 dims, horizon 6, x_0 = 0, g = (2.5, −1.5, 0.7), steps in [−1, 1]: the optimum moves at full
    # speed, then stops on g. Return −(1.5² + 0.5²) − 0.5² − 0 = −2.75.
    world, state, optimum = PointWorld(), starts([[2.5, -1.5, 0.7]]), -2.75
    returns = []
    for iterations in range(1, 11):  # same seed: each run repeats the shorter runs' iterations
        torch.manual_seed(0)
        planner = CEMPlanner(space(3), horizon=6, iterations=iterations)  # PlaNet's 1000 / top 100
        action, belief = planner.plan_warm(world, state)
        returns.append(float(planner.score(world, state, belief["mean"])))
    torch.manual_seed(0)  # the first iteration's candidates: random shooting from N(0, 1), clipped
    shooting = planner.sample(planner.initial_belief(1), 1000)[0]  # (C, H, A)
    many = {key: value.expand(1000, *value.shape[1:]) for key, value in state.items()}
    best_random = float(planner.score(world, many, shooting).max())
    assert returns[-1] > optimum - 0.3 and returns[-1] > best_random + 3.0  # ≈ −2.96, −9.9 (seed 0)
    assert all(later >= earlier - 0.05 for earlier, later in zip(returns, returns[1:]))  # monotone-ish
    # the first action heads for g: full speed on the far dims, about 0.7 (≈ 0.56 here) on the near one
    assert action[0, 0] > 0.9 and action[0, 1] < -0.9 and 0.4 < float(action[0, 2]) < 1.0
    assert returns[0] < optimum - 5.0  # one iteration is far off (≈ −12): the iterations did the work


def test_continuous_plans_each_start_state_independently_within_bounds():
    planner = CEMPlanner(space(1), horizon=5, candidates=300, iterations=8, top_k=30)
    action = planner.plan(PointWorld(), starts([[2.5], [-0.3], [0.6]]))
    assert action.shape == (3, 1) and action.dtype == torch.float32 and bool((action.abs() <= 1).all())
    assert action[0, 0] > 0.9  # far away: full speed
    assert abs(float(action[1, 0]) + 0.3) < 0.1 and abs(float(action[2, 0]) - 0.6) < 0.1  # lands on it


@pytest.mark.parametrize("sizes, targets, expected", [
    ((3,), [[2.0]], [0, 0, 1]),
    ((3,), [[-3.0]], [1, 0, 0]),
    ((3,), [[0.0]], [0, 1, 0]),
    ((2, 3), [[-2.0, 0.0]], [1, 0, 0, 1, 0]),
    ((2, 3), [[3.0, -2.0]], [0, 1, 1, 0, 0]),
])
def test_discrete_plans_are_one_hot_per_sub_action_and_pick_the_rewarding_move(sizes, targets, expected):
    planner = CEMPlanner(space(sizes=sizes), horizon=3, candidates=200, iterations=5, top_k=20, unimix=0.01)
    action = planner.plan(PointWorld(sizes), starts(targets))
    assert action.tolist() == [expected]


def test_discrete_refit_keeps_a_floor_with_unimix():
    planner = CEMPlanner(space(sizes=(2, 3)), horizon=2, candidates=50, iterations=3, top_k=5, unimix=0.1)
    _, belief = planner.plan_warm(PointWorld((2, 3)), starts([[3.0, 3.0]]))
    probs = belief["probs"]  # (1, H, 5)
    assert bool((probs[..., :2] >= 0.05 - 1e-6).all()) and bool((probs[..., 2:] >= 0.1 / 3 - 1e-6).all())
    assert torch.allclose(probs[..., :2].sum(-1), torch.ones(1, 2))
    assert torch.allclose(probs[..., 2:].sum(-1), torch.ones(1, 2))


def test_a_value_at_the_horizon_decides_when_the_reward_is_flat():
    world = PointWorld(reward="flat")
    planner = CEMPlanner(space(1), horizon=4, candidates=200, iterations=6, top_k=20, value_fn=lambda f: f[:, 0])
    up = planner.plan(world, starts([[0.0]]))
    down = planner.plan(world, starts([[0.0]]), value_fn=lambda f: -f[:, 0])  # the call's value_fn wins
    assert up[0, 0] > 0.5 and down[0, 0] < -0.5


def test_score_weights_rewards_by_discount_and_continue_and_bootstraps_the_value():
    class Constant(PointWorld):
        def reward(self, feat):
            return Scalar(torch.ones(feat.shape[0]))

        def cont(self, feat):
            return Scalar(torch.full((feat.shape[0],), 0.5))

    planner = CEMPlanner(space(1), horizon=3, candidates=4, top_k=1, discount=0.9, use_continue=True,
                         value_fn=lambda f: torch.full((f.shape[0],), 10.0))
    score = planner.score(Constant(), starts([[0.0]]), torch.zeros(1, 3, 1))
    expected = 1 + 0.9 * 0.5 + 0.9**2 * 0.5**2 + 0.9**3 * 0.5**3 * 10.0  # J = Σ w_t r_t + w_{H+1} v
    assert torch.allclose(score, torch.tensor([expected]))


def test_the_continue_head_keeps_the_plan_off_a_cliff():
    world = PointWorld(reward="height", cliff=0.5)  # higher is better, but above 0.5 the episode ends
    greedy = CEMPlanner(space(1), horizon=4, candidates=300, iterations=8, top_k=30)
    careful = CEMPlanner(space(1), horizon=4, candidates=300, iterations=8, top_k=30, use_continue=True)
    assert greedy.plan(world, starts([[0.0]]))[0, 0] > 0.9
    assert 0.3 < float(careful.plan(world, starts([[0.0]]))[0, 0]) <= 0.55


@pytest.mark.parametrize("sizes", [(), (2, 3)])
def test_same_seed_same_plan(sizes):
    planner = CEMPlanner(space(2, sizes), horizon=4, candidates=64, iterations=3, top_k=8)
    plans = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        plans.append(planner.plan_warm(PointWorld(sizes), starts([[0.5, 0.1]]))[1])
    assert all(torch.equal(plans[0][k], plans[1][k]) for k in plans[0])
    assert not all(torch.equal(plans[0][k], plans[2][k]) for k in plans[0])


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="top_k"):
        CEMPlanner(space(1), candidates=10, top_k=20)
    with pytest.raises(ValueError, match="horizon"):
        CEMPlanner(space(1), horizon=0)


def test_warm_start_shifts_the_belief_and_reset_forgets_it():
    planner = CEMPlanner(space(2), horizon=4, candidates=64, iterations=2, top_k=8)
    _, belief = planner.plan_warm(PointWorld(), starts([[2.0, -2.0], [0.5, 0.1]]))
    shifted = planner.shift(belief)
    assert torch.equal(shifted["mean"][:, :3], belief["mean"][:, 1:]) and bool((shifted["mean"][:, 3] == 0).all())
    assert bool((shifted["std"] == 1).all())
    reset = planner.reset(belief, torch.tensor([True, False]))
    assert bool((reset["mean"][0] == 0).all()) and torch.equal(reset["mean"][1], belief["mean"][1])
    discrete = CEMPlanner(space(sizes=(3,)), horizon=3, candidates=32, iterations=2, top_k=4)
    _, probs = discrete.plan_warm(PointWorld((3,)), starts([[3.0]]))
    moved = discrete.shift(probs)["probs"]
    assert torch.allclose(moved[:, :2], 0.5 * probs["probs"][:, 1:] + 0.5 / 3)
    assert torch.allclose(moved[:, 2], torch.full((1, 3), 1 / 3))


def test_warm_start_plans_better_than_cold_with_one_iteration_per_step():
    def episode_return(warm: bool) -> float:
        torch.manual_seed(1)
        world, planner = PointWorld(), CEMPlanner(space(3), horizon=5, candidates=30, iterations=1, top_k=5)
        state, belief, total = starts([[2.5, -1.5, 0.7]] * 32), None, torch.zeros(32)
        for _ in range(8):  # closed loop: execute the first action, replan
            action, new_belief = planner.plan_warm(world, state, belief)
            belief = new_belief if warm else None
            state = world.imagine_step(state, action)
            total += world.reward(world.features(state)).mean()
        return float(total.mean())

    assert episode_return(warm=True) > episode_return(warm=False) + 0.5


@pytest.mark.parametrize("env, presets", [("cue", ["debug"]), ("Pendulum-v1", ["debug"]),
                                          ("cue", ["planet", "debug"]), ("Pendulum-v1", ["planet", "debug"])])
def test_plans_with_a_real_world_model(env, presets):
    """DreamerV3's categorical RSSM (debug) and PlaNet's Gaussian one, discrete and continuous actions."""
    cfg = C.make_config(C.compose_presets(presets))
    built = make_env(CueEnv if env == "cue" else env, cfg.env)
    agent = DreamerAgent(built.obs_space, built.act_space, cfg)
    critic = agent.ac.critic if agent.ac is not None else None
    value_fn = (lambda feat: critic(feat).mean()) if critic is not None else (lambda feat: feat.sum(-1))
    state = {k: v for k, v in agent.init_state(3).items() if k != "action"}
    state["stoch"] = state["stoch"] + torch.rand_like(state["stoch"])  # different starts
    space_ = agent.act_space
    for planner in (CEMPlanner(space_, horizon=3, candidates=16, iterations=2, top_k=4),
                    CEMPlanner(space_, horizon=3, candidates=16, iterations=2, top_k=4, use_continue=True,
                               discount=0.99, min_std=0.05, unimix=0.01, value_fn=value_fn)):
        action, belief = planner.plan_warm(agent.wm, state)
        action2, _ = planner.plan_warm(agent.wm, state, belief)
        for a in (action, action2, planner.plan(agent.wm, state)):
            assert a.shape == (3, space_.dim) and a.dtype == torch.float32 and bool(torch.isfinite(a).all())
            if space_.discrete:
                assert bool(((a == 0) | (a == 1)).all()) and bool((a.sum(-1) == len(space_.sizes)).all())
            else:
                assert bool((a.abs() <= 1).all())


def test_the_agent_acts_with_the_planner():
    cfg = C.make_config(C.compose_presets(["planet", "debug"]), ["behavior.planner.candidates=16",
                                                                  "behavior.planner.top_k=4",
                                                                  "behavior.planner.iterations=2"])
    built = make_env("Pendulum-v1", cfg.env)
    agent = DreamerAgent(built.obs_space, built.act_space, cfg)
    obs = {k: np.stack([v] * 2) for k, v in built.reset().items()}
    _, action, _ = agent.act(agent.init_state(2), obs, "eval")
    assert action.shape == (2, 1) and np.all(np.abs(action) <= 1)
