"""The batched tree searches (reverie/planners/tree.py, puct.py, gumbel.py) against hand-computed
trees, a bandit whose best arm the prior hides, and a maze whose shortest paths are known."""

from __future__ import annotations

from collections import deque

import pytest
import torch

from reverie.planners.gumbel import considered_visit_sequence, gumbel_search
from reverie.planners.puct import dirichlet_noise, muzero_search


class ChainModel:
    """Two actions; action 1 pays 1, action 0 pays 0; γ = 0.9; v̂ = 0.5 and a uniform prior everywhere."""

    def predict(self, latent):
        n = latent["s"].shape[0]
        return torch.zeros(n, 2), torch.full((n,), 0.5)

    def step(self, latent, action):
        return {"s": latent["s"] + 1}, action.float(), torch.full(action.shape, 0.9)


def test_puct_selection_backup_and_visits_equal_a_hand_computed_tree():
    result = muzero_search(ChainModel(), {"s": torch.zeros(1, 1)}, simulations=3, dirichlet_fraction=0.0,
                           temperature=0.0)
    tree = result.tree
    # sim 1: all scores 0 → action 0 (node 1). V(root) = (0.5 + 0 + 0.9·0.5) / 2 = 0.475.
    # sim 2: root scores 0.45 + 0.5·1/2·c = 0.7625 vs 0.5·1/1·c = 0.625 (c ≈ 1.25) → action 0 again,
    #   then action 0 at node 1 (node 2): V(1) = (0.5 + 0.45) / 2 = 0.475,
    #   V(root) = (2·0.475 + 0.9·0.45) / 3 = 0.451667.
    # sim 3: min-max over Q ∈ {0.45, 0.4275} puts Q(root, 0) = 0.4275 at 0: 0 + 0.5·√2/3·c = 0.295
    #   vs 0.5·√2·c = 0.884 → action 1 (node 3), G = 1 + 0.9·0.5: V(root) = (3·0.451667 + 1.45) / 4.
    assert tree.parents[0].tolist() == [-1, 0, 1, 0]
    assert tree.action_from_parent[0].tolist() == [-1, 0, 0, 1]
    assert tree.children_visits[0, 0].tolist() == [2.0, 1.0]
    assert tree.node_visits[0].tolist() == [4.0, 2.0, 1.0, 1.0]
    torch.testing.assert_close(tree.node_values[0], torch.tensor([0.70125, 0.475, 0.5, 0.5]))
    torch.testing.assert_close(tree.children_values[0, 0], torch.tensor([0.475, 0.5]))
    torch.testing.assert_close(result.policy, torch.tensor([[2 / 3, 1 / 3]]))
    assert result.action.tolist() == [0]  # temperature 0: the most visited
    torch.testing.assert_close(result.value, torch.tensor([0.70125]))


def test_trees_of_a_batch_do_not_interact():
    roots = {"s": torch.zeros(3, 1)}
    batched = muzero_search(ChainModel(), roots, simulations=5, dirichlet_fraction=0.0, temperature=0.0)
    single = muzero_search(ChainModel(), {"s": torch.zeros(1, 1)}, simulations=5, dirichlet_fraction=0.0,
                           temperature=0.0)
    for row in range(3):
        assert torch.equal(batched.tree.children_visits[row], single.tree.children_visits[0])
        assert torch.equal(batched.tree.node_values[row], single.tree.node_values[0])


def test_dirichlet_noise_is_a_distribution_off_the_invalid_actions():
    torch.manual_seed(0)
    prior = torch.full((64, 4), 0.25)
    invalid = torch.tensor([False, False, True, False]).expand(64, 4)
    noisy = dirichlet_noise(prior, alpha=0.3, fraction=0.25, invalid=invalid)
    torch.testing.assert_close(noisy.sum(-1), torch.ones(64))
    torch.testing.assert_close(noisy[:, 2], torch.full((64,), 0.75 * 0.25))  # no noise on the invalid one
    assert (noisy - prior).abs().max() > 0.05
    assert torch.equal(dirichlet_noise(prior, 0.3, 0.0, invalid), prior)


class Bandit:
    """One pull and the episode ends (γ = 0): Q(root, a) = r_a exactly; v̂ = 0; a fixed prior."""

    def __init__(self, rewards, logits):
        self.rewards, self.logits = torch.tensor(rewards), torch.tensor(logits)

    def predict(self, latent):
        n = latent["s"].shape[0]
        return self.logits.expand(n, -1).clone(), torch.zeros(n)

    def step(self, latent, action):
        return latent, self.rewards[action], torch.zeros(action.shape)


def test_sequential_halving_schedule_for_four_actions_and_sixteen_simulations():
    # ⌈log2 4⌉ = 2 phases: 16 // (2·4) = 2 visits to each of 4, then 16 // (2·2) = 4 to each of 2.
    assert considered_visit_sequence(4, 16) == (0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5)
    assert considered_visit_sequence(1, 3) == (0, 1, 2)


def test_gumbel_halving_finds_the_best_arm_that_the_prior_hides():
    bandit = Bandit(rewards=[0.0, 0.2, 0.5, 1.0], logits=[3.0, 0.0, 0.0, 0.0])
    result = gumbel_search(bandit, {"s": torch.zeros(1, 1)}, simulations=16, gumbel_scale=0.0)
    # Phase 1 visits all four twice; σ(q̂) = (50 + 2)·0.1·q̂ with q̂ = r here: logits + σ = 3, 1.04,
    # 2.6, 5.2 keeps arms 3 and 0 for phase 2 (4 more each). The final 3 + 0 vs 0 + 5.6 picks arm 3.
    assert result.tree.children_visits[0, 0].tolist() == [6.0, 2.0, 2.0, 6.0]
    assert result.action.tolist() == [3]
    expected = torch.softmax(torch.tensor([3.0, 0, 0, 0]) + 5.6 * torch.tensor([0.0, 0.2, 0.5, 1.0]), -1)
    torch.testing.assert_close(result.policy[0], expected)


def test_gumbel_search_with_noise_mostly_takes_the_best_arm_of_eight():
    rewards = [0.1, 0.9, 0.0, 0.3, 0.2, 0.4, 0.0, 0.1]
    bandit = Bandit(rewards=rewards, logits=[0.0] * 8)
    result = gumbel_search(bandit, {"s": torch.zeros(256, 1)}, simulations=16,
                           generator=torch.Generator().manual_seed(0))
    # The prior alone would take arm 1 in 1/8 of rows. At the end arm 1 leads the runner-up by
    # σ = (50 + 4)·0.1·(1 − 0.4 / 0.9) = 3.0, which a Gumbel difference (logistic) exceeds in 4.7% of
    # rows; earlier halving rounds lose it in a few more: 84.8% of these 256 rows.
    assert (result.action == 1).float().mean() > 0.75
    assert result.tree.children_visits[:, 0].sum(-1).eq(16).all()


def test_invalid_actions_are_never_taken_or_visited_at_the_root():
    bandit = Bandit(rewards=[0.0, 0.2, 0.5, 1.0], logits=[0.0, 0.0, 0.0, 5.0])
    invalid = torch.tensor([[False, False, False, True]] * 8)
    for search, options in ((gumbel_search, {}), (muzero_search, {"temperature": 0.0})):
        result = search(bandit, {"s": torch.zeros(8, 1)}, simulations=12, invalid_actions=invalid, **options)
        assert (result.action == 2).all()
        assert result.tree.children_visits[:, 0, 3].eq(0).all()
        assert result.policy[:, 3].eq(0).all()
    with pytest.raises(ValueError, match="valid action per row"):
        muzero_search(bandit, {"s": torch.zeros(1, 1)}, 4, invalid_actions=torch.ones(1, 4, dtype=torch.bool))


# Two routes join at the top: from (2, 2) the way right is 4 steps, the way left 6.
MAZE = ["..G..",
        ".##.#",
        "....."]
MOVES = torch.tensor([[-1, 0], [1, 0], [0, -1], [0, 1]])  # up, down, left, right


class MazeModel:
    """A perfect model of MAZE: latent (row, col); a wall or the edge leaves the agent in place;
    reaching G pays 1 and ends the episode (γ = 0 from there), every other step pays 0 with γ = 0.95."""

    def __init__(self):
        self.walls = torch.tensor([[c == "#" for c in row] for row in MAZE])
        self.goal = torch.tensor([[r, row.index("G")] for r, row in enumerate(MAZE) if "G" in row][0])

    def predict(self, latent):
        n = latent["pos"].shape[0]
        return torch.zeros(n, 4), torch.zeros(n)

    def step(self, latent, action):
        pos = latent["pos"]
        at_goal = (pos == self.goal).all(-1)
        new = pos + MOVES[action]
        rows, cols = new[:, 0].clamp(0, len(MAZE) - 1), new[:, 1].clamp(0, len(MAZE[0]) - 1)
        blocked = (new[:, 0] != rows) | (new[:, 1] != cols) | self.walls[rows, cols]
        new = torch.where((blocked | at_goal)[:, None], pos, new)
        arrives = (new == self.goal).all(-1) & ~at_goal
        return {"pos": new}, arrives.float(), torch.where(at_goal | arrives, 0.0, 0.95)


def shortest_path_length(start: tuple[int, int]) -> int:
    walls = MazeModel().walls
    goal = tuple(MazeModel().goal.tolist())
    frontier, seen = deque([(start, 0)]), {start}
    while frontier:
        (r, c), d = frontier.popleft()
        if (r, c) == goal:
            return d
        for dr, dc in MOVES.tolist():
            nr, nc = r + dr, c + dc
            if 0 <= nr < len(MAZE) and 0 <= nc < len(MAZE[0]) and not walls[nr, nc] and (nr, nc) not in seen:
                seen.add((nr, nc))
                frontier.append(((nr, nc), d + 1))
    raise AssertionError("unreachable goal")


@pytest.mark.parametrize("search, simulations, starts", [
    # pUCT reaches depth 4 with 300 simulations here; Gumbel's uniform interior selection spreads
    # evenly when every value is 0 (v̂ = 0 everywhere), so it is given starts within 3 steps.
    ("muzero", 300, [[2, 0], [2, 4], [2, 2], [0, 4], [1, 0]]),
    ("gumbel", 64, [[2, 3], [1, 0], [0, 4], [1, 3]]),
])
def test_search_on_a_perfect_maze_model_walks_a_shortest_path(search, simulations, starts):
    model = MazeModel()
    pos = torch.tensor(starts)
    steps = torch.zeros(len(starts), dtype=torch.long)
    arrived = torch.zeros(len(starts), dtype=torch.bool)
    for _ in range(8):
        if search == "muzero":
            result = muzero_search(model, {"pos": pos}, simulations, dirichlet_fraction=0.0, temperature=0.0)
        else:
            result = gumbel_search(model, {"pos": pos}, simulations, max_considered=4, gumbel_scale=0.0)
        latent, reward, _ = model.step({"pos": pos}, result.action)
        steps += (~arrived).long()
        arrived |= reward > 0
        pos = latent["pos"]
        if arrived.all():
            break
    assert steps.tolist() == [shortest_path_length(tuple(s)) for s in starts]
