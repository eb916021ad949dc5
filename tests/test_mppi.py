"""MPPI (reverie/planners/mppi.py): it finds the optimum of known objectives, beats random shooting,
uses the policy prior, warm-starts from the shifted plan, and stops counting reward once a
termination is predicted (returns checked by hand)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reverie.planners.mppi import MPPIPlanner, repeat_rows


class Quadratic:
    """r(z, a) = −‖a − target‖² whatever the step; the state carries each env's target (M, A).
    `prior` makes the policy return the target exactly; the value is zero and nothing terminates."""

    def __init__(self, prior: bool = False):
        self.prior = prior

    def step(self, state, action):
        return dict(state), -(action - state["target"]).square().sum(-1)

    def value(self, state):
        return torch.zeros(state["target"].shape[0])

    def policy(self, state):
        return state["target"].clone() if self.prior else None

    def termination(self, state):
        return None


class Scripted:
    """Rewards 1, 2, 4 at steps 0, 1, 2 whatever the action, value 8 at the horizon, and (optionally)
    a termination predicted on reaching the state after step `ends_after`."""

    def __init__(self, ends_after: int | None):
        self.ends_after = ends_after

    def step(self, state, action):
        t = state["t"]
        return {"t": t + 1}, torch.tensor([1.0, 2.0, 4.0])[t.long()]

    def value(self, state):
        return torch.full(state["t"].shape, 8.0)

    def policy(self, state):
        return None

    def termination(self, state):
        if self.ends_after is None:
            return None
        return (state["t"] == self.ends_after + 1).float()


def targets(n: int, dim: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, dim, generator=torch.Generator().manual_seed(seed)) * 1.6 - 0.8  # inside [−0.8, 0.8]


def random_shooting(target: torch.Tensor, samples: int, std: float = 2.0) -> torch.Tensor:
    """The best first action of `samples` sequences drawn once from N(0, std²), clipped: (N, A)."""
    actions = (std * torch.randn(target.shape[0], samples, target.shape[1])).clamp(-1, 1)  # (N, C, A)
    score = -(actions - target[:, None]).square().sum(-1)  # (N, C)
    return actions[torch.arange(target.shape[0]), score.argmax(1)]


def test_mppi_finds_the_optimum_of_each_env_and_beats_random_shooting():
    torch.manual_seed(0)
    target = targets(4, 6)
    planner = MPPIPlanner(6)  # TD-MPC2's defaults: H 3, 6 iterations, 512 samples, 64 elites
    action, mean = planner.plan(Quadratic(), {"target": target}, eval_mode=True)
    assert action.shape == (4, 6) and mean.shape == (4, 3, 6)
    assert (mean - target[:, None]).norm(dim=-1).max() < 0.15  # every step of the plan, not just the first
    # The action is one elite drawn by weight (TD-MPC2), so it scatters around the mean (σ ≈ 0.15 per
    # dim here) — and still lands nearer than the best of as many random sequences.
    mppi_error = (action - target).norm(dim=1).mean()
    shooting_error = (random_shooting(target, 512) - target).norm(dim=1).mean()
    assert mppi_error < 0.6 * shooting_error, (mppi_error, shooting_error)


def test_the_policy_prior_rollouts_take_part_in_the_search():
    torch.manual_seed(1)
    target = targets(3, 6, seed=1)
    one_round = {"iterations": 1, "policy_samples": 24}
    with_prior = MPPIPlanner(6, **one_round).plan(Quadratic(prior=True), {"target": target})[1]
    without = MPPIPlanner(6, **one_round).plan(Quadratic(prior=False), {"target": target})[1]
    assert (with_prior - target[:, None]).abs().max() < 0.01  # the exact prior samples carry the weights
    assert (without - target[:, None]).abs().max() > 0.1


def test_training_actions_add_the_first_step_std_and_stay_in_bounds():
    torch.manual_seed(2)
    target = torch.full((2, 3), 0.99)
    planner = MPPIPlanner(3, min_std=0.5, max_std=0.5)
    greedy = [planner.plan(Quadratic(), {"target": target}, eval_mode=True)[0] for _ in range(20)]
    noisy = [planner.plan(Quadratic(), {"target": target})[0] for _ in range(20)]
    spread = lambda xs: torch.stack(xs).std(0).mean()
    assert spread(noisy) > 2 * spread(greedy)
    assert all(a.abs().max() <= 1.0 for a in noisy)


def test_warm_start_shifts_the_previous_plan_and_appends_zeros():
    planner = MPPIPlanner(2, horizon=3)
    mean = torch.arange(12.0).view(2, 3, 2)
    shifted = planner.warm_start(mean)
    assert torch.equal(shifted[:, :2], mean[:, 1:]) and torch.equal(shifted[:, 2], torch.zeros(2, 2))


def test_a_plan_from_the_previous_mean_starts_closer():
    torch.manual_seed(3)
    target = targets(2, 6, seed=3)
    planner = MPPIPlanner(6, iterations=1, policy_samples=0)
    fresh = planner.plan(Quadratic(), {"target": target})[1]
    previous = target[:, None].expand(2, 3, 6).clone()  # a plan that already sits at the optimum
    warm = planner.plan(Quadratic(), {"target": target}, prev_mean=previous)[1]
    error = lambda m: (m[:, :2] - target[:, None]).norm(dim=-1).mean()  # over the shifted steps
    assert error(warm) < error(fresh)


@pytest.mark.parametrize(("ends_after", "expected"), [
    (None, 1 + 0.5 * 2 + 0.25 * 4 + 0.125 * 8),  # 4.0: every reward and the value, discounted
    (1, 1 + 0.5 * 2),  # the state after step 1 ends the episode: later rewards and the value drop
    (0, 1.0),
])
def test_rollout_return_discounts_and_stops_at_a_predicted_termination(ends_after, expected):
    planner = MPPIPlanner(1, horizon=3, discount=0.5)
    state = {"t": torch.zeros(2, dtype=torch.long)}
    got = planner.rollout_return(Scripted(ends_after), state, torch.zeros(2, 3, 1))
    assert torch.allclose(got, torch.full((2,), expected))


def test_repeat_rows_keeps_each_start_state_together():
    state = {"z": torch.tensor([[1.0], [2.0]])}
    assert repeat_rows(state, 3)["z"].flatten().tolist() == [1, 1, 1, 2, 2, 2]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"elites": 600}, "elites ≤ samples"),
    ({"policy_samples": 512}, "policy_samples < samples"),
    ({"horizon": 0}, "horizon ≥ 1"),
    ({"min_std": 0.0}, "min_std"),
    ({"temperature": 0.0}, "temperature > 0"),
])
def test_bad_settings_are_one_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MPPIPlanner(2, **kwargs)


# ------------------------------------------------------------------------------ on the Dreamer world model

MPPI_SMALL = ["behavior.kind=planner", "behavior.planner.kind=mppi", "behavior.planner.horizon=3",
              "behavior.planner.candidates=32", "behavior.planner.top_k=8", "behavior.planner.iterations=2",
              "behavior.planner.policy_samples=4"]


def dreamer_agent(env: str, overrides=()):
    from reverie import config as C
    from reverie.agents.dreamer import DreamerAgent
    from reverie.envs import make_env

    cfg = C.make_config(C.compose_presets(["debug"]), [*MPPI_SMALL, *overrides])
    built = make_env(env, cfg.env)
    return DreamerAgent(built.obs_space, built.act_space, cfg), built


@pytest.mark.parametrize("value", [False, True])
def test_the_dreamer_agent_plans_with_mppi_and_carries_the_plan_until_an_episode_starts(value):
    torch.manual_seed(0)
    agent, env = dreamer_agent("Pendulum-v1", [f"behavior.planner.value={value}"])
    assert (agent.ac is not None) == value  # the critic (and the actor prior) only with the value
    obs = {k: np.stack([v] * 2) for k, v in env.reset().items()}  # (2, ...), is_first set
    state = agent.init_state(2)
    assert state["plan"].shape == (2, 3, 1) and not state["plan"].any()
    state, action, _ = agent.act(state, obs, "train")
    assert action.shape == (2, 1) and np.all(np.abs(action) <= 1) and state["plan"].abs().sum() > 0
    planned = state["plan"].clone()
    obs["is_first"] = np.array([True, False])
    seen = {}
    original = agent.planner.plan
    agent.planner.plan = lambda model, s, previous, eval_mode: seen.update(previous=previous) or original(
        model, s, previous, eval_mode)
    state, action, _ = agent.act(state, obs, "eval")
    assert not seen["previous"][0].any()  # a new episode plans from scratch
    assert torch.equal(seen["previous"][1], planned[1])  # the other env goes on from its plan


def test_mppi_refuses_discrete_actions_with_one_clear_line():
    from toy_envs import CueEnv

    from reverie.errors import ConfigError

    with pytest.raises(ConfigError, match="planner.kind=mppi plans continuous .* use behavior.planner.kind=cem"):
        dreamer_agent(CueEnv)


def test_the_rssm_latent_model_reads_reward_value_and_termination_from_the_heads():
    from reverie.agents.dreamer.planning import RSSMLatentModel

    torch.manual_seed(0)
    agent, _ = dreamer_agent("Pendulum-v1", ["behavior.planner.value=true"])
    wm, ac = agent.wm, agent.ac
    state = {k: v for k, v in agent.init_state(5).items() if k in ("deter", "stoch")}
    action = torch.rand(5, 1) * 2 - 1
    model = RSSMLatentModel(wm, ac, use_value=True, discount=0.9)
    torch.manual_seed(1)
    nxt, reward = model.step(state, action)
    torch.manual_seed(1)
    expected = wm.rssm.imagine_step(state, action)
    assert torch.equal(nxt["deter"], expected["deter"]) and torch.equal(nxt["stoch"], expected["stoch"])
    feat = wm.features(nxt)
    assert torch.allclose(reward, wm.reward(feat).mean())
    assert torch.allclose(model.value(nxt), ac.critic(feat).mean())
    assert torch.equal(RSSMLatentModel(wm, None).value(nxt), torch.zeros(5)) and RSSMLatentModel(wm).policy(nxt) is None
    cont = wm.cont(feat).mean()  # contdisc (the default): ĉ = γ(1 − terminal)
    assert torch.allclose(model.termination(nxt), 1 - (cont / 0.9).clamp(0, 1))


def test_a_short_run_trains_and_evaluates_with_the_mppi_planner(tmp_path):
    import reverie

    fast = {"run.prefill": 50, "run.train_ratio": 8, "run.eval_every": 0, "run.eval_episodes": 1,
            "run.report_every": 0, "run.log_every": 0, "behavior.planner.value": True,
            **dict(item.split("=") for item in MPPI_SMALL)}
    result = reverie.train("Pendulum-v1", logdir=tmp_path / "run", presets=["debug"], steps=120,
                           overrides=fast, progress=False)
    assert result["step"] == 120 and result["updates"] > 0 and np.isfinite(result["eval"]["return_mean"])
