"""Model-predictive control with the cross-entropy method (Rubinstein 1999), as PlaNet plans
(Hafner et al. 2019, "Learning Latent Dynamics for Planning from Pixels", §3 and Algorithm 2): no
policy network, a search over action sequences in the learnt model at every env step.

For each of N start states s_0, a belief q over action sequences a_{1:H}, independent per step t
and action dimension: Normal(μ_t, σ_t) for continuous actions (μ = 0, σ = 1 at the start), one
categorical p_t per discrete sub-action (uniform at the start). Then, `iterations` times:

    a^(c)_{1:H} ~ q, c = 1..C                        (continuous samples clipped to [−1, 1])
    s_t = imagine(s_{t−1}, a_t)                       the prior, with sampled latents (as PlaNet)
    J = Σ_{t=1..H} w_t r̂(s_t) + w_{H+1} v(s_H)         v: optional `value_fn` at the horizon
        w_t = γ^{t−1} Π_{j<t} ĉ(s_j)                  γ = `discount`; ĉ (continue head) only with
                                                      `use_continue`, else ĉ ≡ 1 (PlaNet: γ = 1, no v)
    E = the `top_k` candidates of highest J           (the elite)
    μ_t, σ_t = mean, biased std of E (σ ≥ `min_std`), as PlaNet's tf.nn.moments
    p_t = (1 − u)·frequency of each class in E + u/n  u = `unimix`: a floor so no class dies

and act with the first step of the final belief: μ_1, or the most probable class of each
sub-action as one-hot blocks in the env's action layout. With `use_continue` and a world model
trained with `model.contdisc`, ĉ already holds the discount: leave γ = 1.

Warm start (`plan_warm`): the caller keeps the returned belief per env and passes it back at the
next step; it is shifted by one step (the executed step dropped, a fresh step appended) and its
spread reset — σ to 1 (as PETS and iCEM do: a collapsed σ would freeze the plan), p mixed half
with the uniform — before the search starts from it. `plan` is stateless (PlaNet).

Any of our world models plans this way: it needs `rssm.imagine_step(state, action)`,
`features(state)`, `reward(feat).mean()` and, with `use_continue`, `cont(feat).mean()`. All N start
states and C candidates go through the model as one batch of N·C; no gradients, no host syncs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

ValueFn = Callable[[torch.Tensor], torch.Tensor]  # features (M, F) → values (M,)
Belief = dict[str, torch.Tensor]  # {"mean", "std"} (N, H, A) each, or {"probs"} (N, H, A)
WARM_MIX = 0.5  # weight of the uniform in a shifted discrete belief


class CEMPlanner:
    """CEM over action sequences; see the module docstring. `act_space` is a
    `reverie.envs.spaces.ActionSpace` (`discrete`, `dim`, `sizes`). Holds no parameters and no state."""

    def __init__(self, act_space, horizon: int = 12, candidates: int = 1000, iterations: int = 10,
                 top_k: int = 100, *, min_std: float = 0.0, unimix: float = 0.0, discount: float = 1.0,
                 use_continue: bool = False, value_fn: ValueFn | None = None):
        if not 1 <= top_k <= candidates:
            raise ValueError(f"the planner needs 1 ≤ top_k ≤ candidates, got {top_k} and {candidates}")
        if horizon < 1 or iterations < 1:
            raise ValueError(f"the planner needs horizon ≥ 1 and iterations ≥ 1, got {horizon} and {iterations}")
        if not 0.0 <= unimix <= 1.0 or min_std < 0.0:
            raise ValueError(f"the planner needs 0 ≤ unimix ≤ 1 and min_std ≥ 0, got {unimix} and {min_std}")
        self.discrete = act_space.discrete
        self.dim = act_space.dim
        self.sizes = tuple(act_space.sizes) if self.discrete else ()
        self.horizon, self.candidates, self.iterations, self.top_k = horizon, candidates, iterations, top_k
        self.min_std, self.unimix, self.discount = min_std, unimix, discount
        self.use_continue, self.value_fn = use_continue, value_fn

    # ------------------------------------------------------------------------------------------
    def plan(self, wm, state: dict[str, torch.Tensor], value_fn: ValueFn | None = None) -> torch.Tensor:
        """Stateless planning (PlaNet): first actions (N, A) from N RSSM states
        {"deter": (N, D), "stoch": (N, S, K)}. `value_fn` overrides the constructor's."""
        return self.plan_warm(wm, state, None, value_fn)[0]

    @torch.no_grad()
    def plan_warm(self, wm, state: dict[str, torch.Tensor], belief: Belief | None = None,
                  value_fn: ValueFn | None = None) -> tuple[torch.Tensor, Belief]:
        """First actions (N, A) and the final belief over the H steps from now. Pass that belief
        back at the next env step for the same envs (it is shifted one step inside); None starts
        from the initial belief. Reset the rows of envs that began a new episode with `reset`."""
        N, H, C, A, k = state["deter"].shape[0], self.horizon, self.candidates, self.dim, self.top_k
        belief = self.initial_belief(N, state["deter"].device) if belief is None else self.shift(belief)
        start = {key: value.repeat_interleave(C, 0) for key, value in state.items()}  # (N·C, ...)
        for _ in range(self.iterations):
            actions = self.sample(belief, C)  # (N, C, H, A)
            score = self.score(wm, start, actions.flatten(0, 1), value_fn).view(N, C)  # (N, C)
            elite_index = score.topk(k, dim=1).indices  # (N, k)
            elite = actions.gather(1, elite_index[:, :, None, None].expand(N, k, H, A))  # (N, k, H, A)
            belief = self.refit(elite)
        return self.first_action(belief), belief

    # ------------------------------------------------------------------------------------------
    def initial_belief(self, n: int, device=None) -> Belief:
        """N(0, 1) per step and dim, or uniform class probabilities: (n, H, A) each."""
        shape = (n, self.horizon, self.dim)
        if self.discrete:
            return {"probs": self.uniform(device).expand(shape).clone()}
        return {"mean": torch.zeros(shape, device=device), "std": torch.ones(shape, device=device)}

    def uniform(self, device=None) -> torch.Tensor:
        """1/n at every entry of a block of n classes: the uniform belief of one step, (A,). Filled
        on the device (a host→device copy would wait for the stream)."""
        return torch.cat([torch.full((n,), 1.0 / n, device=device) for n in self.sizes])

    def shift(self, belief: Belief) -> Belief:
        """The next step's starting belief: drop step 1, append a fresh step H, reset the spread."""
        some = next(iter(belief.values()))  # (N, H, A)
        fresh = self.initial_belief(some.shape[0], some.device)
        if self.discrete:
            probs = torch.cat([belief["probs"][:, 1:], fresh["probs"][:, :1]], 1)  # (N, H, A)
            return {"probs": (1 - WARM_MIX) * probs + WARM_MIX * fresh["probs"]}
        return {"mean": torch.cat([belief["mean"][:, 1:], fresh["mean"][:, :1]], 1), "std": fresh["std"]}

    def reset(self, belief: Belief, mask: torch.Tensor) -> Belief:
        """The initial belief for the envs where mask (N,) is true (e.g. `is_first`), without a sync."""
        n, device = mask.shape[0], mask.device
        fresh = self.initial_belief(n, device)
        return {key: torch.where(mask.bool()[:, None, None], fresh[key], value) for key, value in belief.items()}

    def sample(self, belief: Belief, count: int) -> torch.Tensor:
        """`count` action sequences per start state: (N, count, H, A)."""
        if not self.discrete:
            mean, std = belief["mean"].unsqueeze(1), belief["std"].unsqueeze(1)  # (N, 1, H, A)
            noise = torch.randn(mean.shape[0], count, *mean.shape[2:], device=mean.device)
            return (mean + std * noise).clamp(-1.0, 1.0)
        parts = []
        for probs in belief["probs"].split(self.sizes, -1):  # (N, H, n) per sub-action
            cdf = probs.cumsum(-1).unsqueeze(1)  # (N, 1, H, n)
            uniform = torch.rand(probs.shape[0], count, probs.shape[1], 1, device=probs.device)
            index = (cdf <= uniform).sum(-1).clamp_(max=probs.shape[-1] - 1)  # (N, count, H): inverse CDF
            parts.append(one_hot(index, probs.shape[-1]))
        return torch.cat(parts, -1)

    def refit(self, elite: torch.Tensor) -> Belief:
        """The belief that fits the elite sequences (N, k, H, A)."""
        if self.discrete:
            freq = elite.mean(1)  # class frequencies per sub-action block: (N, H, A)
            return {"probs": (1 - self.unimix) * freq + self.unimix * self.uniform(freq.device)}
        return {"mean": elite.mean(1), "std": elite.std(1, correction=0).clamp(min=self.min_std)}  # biased

    def first_action(self, belief: Belief) -> torch.Tensor:
        """μ_1, or the one-hot of the most probable class of each sub-action at step 1: (N, A)."""
        if not self.discrete:
            return belief["mean"][:, 0].clamp(-1.0, 1.0)
        blocks = belief["probs"][:, 0].split(self.sizes, -1)  # (N, n) each
        return torch.cat([one_hot(p.argmax(-1), p.shape[-1]) for p in blocks], -1)

    @torch.no_grad()
    def score(self, wm, state: dict[str, torch.Tensor], actions: torch.Tensor,
              value_fn: ValueFn | None = None) -> torch.Tensor:
        """J of each sequence (M, H, A) from the start states (M, ...): (M,); see the module docstring.
        `value_fn` overrides the constructor's."""
        value_fn = value_fn if value_fn is not None else self.value_fn
        total = torch.zeros(actions.shape[0], device=actions.device)  # (M,)
        weight = torch.ones(actions.shape[0], device=actions.device)  # w_1 = 1
        for t in range(actions.shape[1]):
            state = wm.rssm.imagine_step(state, actions[:, t])
            feat = wm.features(state)  # of s_t, (M, F)
            total = total + weight * wm.reward(feat).mean().float()
            weight = weight * self.discount
            if self.use_continue:
                weight = weight * wm.cont(feat).mean().float()
        if value_fn is not None:
            total = total + weight * value_fn(feat).float()  # w_{H+1} v(s_H)
        return total


def one_hot(index: torch.Tensor, classes: int) -> torch.Tensor:
    """float one-hots (..., classes) of integer indices (...), by comparison: no bounds-check sync."""
    return (index.unsqueeze(-1) == torch.arange(classes, device=index.device)).float()
