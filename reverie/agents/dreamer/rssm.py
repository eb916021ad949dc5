"""Recurrent state-space model: deterministic h_t (a GRU) and stochastic z_t (DESIGN §4, §5).

    h_t = f(h_{t−1}, z_{t−1}, a_{t−1})          sequence model (`core`)
    z_t ~ q(z_t | h_t, x_t)                      posterior (`posterior`): an MLP on [h_t, x_t]
    ẑ_t ~ p(ẑ_t | h_t)                           prior (`prior`): an MLP on h_t

A state is a dict {"deter": (N, D), "stoch": (N, S, K)}. The latent (`model.rssm.latent`) is
    categorical: S one-hot variables of K classes with a uniform mix (DreamerV2, V3);
    gaussian:    S Normal dims, K = 1, std = softplus(x) + min_std (PlaNet, Dreamer v1).
A latent's distribution is given by its parameters ("params"): logits (…, S, K), or the mean and
the std before the softplus (…, S, 2).
The sequence model (`model.rssm.core`) is
    block: the current DreamerV3 block-diagonal GRU over separate projections of h, z and a;
    gru:   one GRU cell, gates = Norm(W[x, h]), on x = Dense([z, a]) (DreamerV3 2023, V2, V1).
Both use the candidate tanh(r ⊙ c) and an update-gate bias (`update_bias`, official −1).
`is_first` resets the state to zeros or, with `model.rssm.initial=learned` (2023), to h_0 = tanh(w) and z_0 = the prior's mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reverie.config import RSSMConfig
from reverie.kernels.compile import compiled
from reverie.kernels.precision import float32_for_few_rows
from reverie.nn.distributions import Normal, OneHotCategorical
from reverie.nn.layers import BlockLinear, Dense, Linear, Norm, get_act


def gru_update(reset, cand, update, deter, update_bias: float = -1.0):
    """h' = u ⊙ tanh(σ(r) ⊙ c) + (1 − u) ⊙ h with u = σ(update + update_bias).

    The official bias is −1: at initialisation u ≈ 0.27, so h keeps about 0.73^t of what it held t
    steps ago. A lower bias (`model.rssm.update_bias`, e.g. −4: u ≈ 0.02) starts the GRU with a
    memory of tens of steps, the "chrono" idea of Tallec & Ollivier (2018)."""
    cand = torch.tanh(torch.sigmoid(reset) * cand)
    update = torch.sigmoid(update + update_bias)
    return update * cand + (1 - update) * deter


class BlockGRU(nn.Module):
    """The current DreamerV3 core: h, z, a projected to `hidden` each, every block sees its slice
    of h plus all three projections, a block-diagonal hidden layer, then the gates."""

    def __init__(self, cfg: RSSMConfig, stoch_dim: int, action_dim: int, norm: str, act: str):
        super().__init__()
        D, H, G = cfg.deter, cfg.hidden, cfg.blocks
        self.blocks, self.update_bias = G, cfg.update_bias
        self.in_deter = Dense(D, H, norm, act)
        self.in_stoch = Dense(stoch_dim, H, norm, act)
        self.in_action = Dense(action_dim, H, norm, act)
        block_in = D // G + 3 * H
        fans = cfg.block_fan_in
        layers = []
        for i in range(cfg.dyn_layers):
            layers += [BlockLinear((block_in if i == 0 else D // G) * G, D, G, fan_in=fans), Norm(D, norm), get_act(act)]
        self.dyn_hidden = nn.Sequential(*layers)
        self.gates = BlockLinear(D if cfg.dyn_layers else block_in * G, 3 * D, G, fan_in=fans)

    def forward(self, deter, stoch, action):
        """(N, D), (N, S·K), (N, A) → (N, D)."""
        G, n = self.blocks, deter.shape[0]
        x = torch.cat([self.in_deter(deter), self.in_stoch(stoch), self.in_action(action)], -1)  # (N, 3H)
        x = torch.cat([deter.reshape(n, G, -1), x.unsqueeze(1).expand(n, G, x.shape[-1])], -1)  # (N, G, D/G + 3H)
        x = self.dyn_hidden(x.reshape(n, -1))
        reset, cand, update = self.gates(x).reshape(n, G, 3, -1).unbind(2)  # (N, G, D/G) each
        return gru_update(reset, cand, update, deter.reshape(n, G, -1), self.update_bias).reshape(n, -1)

    gru_update = staticmethod(gru_update)  # for kernels that run this core's steps their own way


class GRU(nn.Module):
    """One GRU cell (DreamerV3 2023, V2, V1): x = Dense([z, a]), gates = Norm(W[x, h])."""

    def __init__(self, cfg: RSSMConfig, stoch_dim: int, action_dim: int, norm: str, act: str):
        super().__init__()
        D, H = cfg.deter, cfg.hidden
        self.update_bias = cfg.update_bias
        self.inputs = Dense(stoch_dim + action_dim, H, norm, act)
        norm = cfg.cell_norm or norm
        self.gates = nn.Sequential(Linear(H + D, 3 * D, bias=norm == "none"), Norm(3 * D, norm))

    def forward(self, deter, stoch, action):
        """(N, D), (N, S·K), (N, A) → (N, D)."""
        x = self.inputs(torch.cat([stoch, action], -1))
        reset, cand, update = self.gates(torch.cat([x, deter], -1)).chunk(3, -1)  # (N, D) each
        return gru_update(reset, cand, update, deter, self.update_bias)

    gru_update = staticmethod(gru_update)


class RSSM(nn.Module):
    def __init__(self, cfg: RSSMConfig, token_dim: int, action_dim: int, norm="rms", act="silu"):
        super().__init__()
        self.cfg = cfg
        D, H = cfg.deter, cfg.hidden
        self.gaussian = cfg.latent == "gaussian"
        self.latent_shape = (cfg.stoch, 1 if self.gaussian else cfg.classes)  # (S, K)
        self.stoch_dim = self.latent_shape[0] * self.latent_shape[1]
        params = 2 * cfg.stoch if self.gaussian else self.stoch_dim  # mean and std, or logits
        self.params_shape = (cfg.stoch, 2) if self.gaussian else self.latent_shape
        core = {"block": BlockGRU, "gru": GRU}[cfg.core]
        self.core_net = core(cfg, self.stoch_dim, action_dim, norm, act)
        prior = [Dense(D if i == 0 else H, H, norm, act) for i in range(cfg.img_layers)]
        self.prior_net = nn.Sequential(*prior, Linear(H if prior else D, params))
        post = [Dense(D + token_dim if i == 0 else H, H, norm, act) for i in range(cfg.obs_layers)]
        self.post_net = nn.Sequential(*post, Linear(H if post else D + token_dim, params))
        if cfg.initial == "learned":
            self.initial_deter = nn.Parameter(torch.zeros(D))

    # ---------------------------------------------------------------------------------------
    def initial(self, batch_size: int, device=None) -> dict[str, torch.Tensor]:
        """The state before the first step: zeros, or the learnt h_0 = tanh(w) with z_0 = prior mode."""
        if self.cfg.initial == "learned":
            deter = torch.tanh(self.initial_deter).expand(batch_size, -1)
            return {"deter": deter, "stoch": self.latent(self.prior(deter), sample=False)}
        return {"deter": torch.zeros(batch_size, self.cfg.deter, device=device),
                "stoch": torch.zeros(batch_size, *self.latent_shape, device=device)}

    def dist(self, params: torch.Tensor):
        """Distribution over the (…, S, K) latents from their params: (…, S, K) logits or (…, S, 2)
        mean and raw std; log-probs, KL and entropy summed over the latents."""
        if self.gaussian:
            mean, std = params.float().chunk(2, -1)  # (…, S, 1) each
            return Normal(mean, F.softplus(std) + self.cfg.min_std, event_dims=2)
        return OneHotCategorical(params, self.cfg.unimix, event_dims=1)

    def core(self, deter, stoch, action):
        """h_t = f(h_{t−1}, z_{t−1}, a_{t−1}): (N, D), (N, S, K), (N, A) → (N, D)."""
        return self.core_net(deter, stoch.flatten(-2), self.scale_action(action))

    @staticmethod
    def scale_action(action: torch.Tensor) -> torch.Tensor:
        """a / max(1, |a|) per component: the core sees actions in [-1, 1]."""
        return action / torch.clamp(action.abs(), min=1.0).detach()

    def prior(self, deter: torch.Tensor) -> torch.Tensor:
        """p(ẑ_t | h_t): (…, D) → the latent's params (…, S, K) or (…, S, 2)."""
        return self.prior_net(deter).unflatten(-1, self.params_shape)

    def posterior(self, deter: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        """q(z_t | h_t, x_t), an MLP on [h_t, x_t]: (…, D), (…, E) → the latent's params."""
        return self.post_net(torch.cat([deter, token], -1)).unflatten(-1, self.params_shape)

    def latent(self, params: torch.Tensor, sample: bool = True) -> torch.Tensor:
        """A sample (straight-through for categoricals) or the mode of the latent."""
        dist = self.dist(params)
        return dist.sample() if sample else dist.mode()

    def reset(self, state, prev_action, is_first):
        """Where an episode starts (is_first (N,)): the initial state and a zero previous action."""
        starts = is_first.float().unsqueeze(-1)  # (N, 1): 1 where an episode starts
        carried = 1.0 - starts  # 1 where the state carries over from the previous step
        deter, stoch = state["deter"] * carried, state["stoch"] * carried.unsqueeze(-1)
        if self.cfg.initial == "learned":
            initial = self.initial(deter.shape[0])
            deter = deter + starts * initial["deter"]
            stoch = stoch + starts.unsqueeze(-1) * initial["stoch"]
        return {"deter": deter, "stoch": stoch}, prev_action * carried

    # ---------------------------------------------------------------------------------------
    @compiled
    def observe_step(self, state, prev_action, token, is_first, sample: bool = True):
        """Posterior step: state (N, ·), prev_action (N, A), token (N, E), is_first (N,) → the new
        state and the posterior's params (N, S, ·)."""
        state, prev_action = self.reset(state, prev_action, is_first)
        deter = self.core(state["deter"], state["stoch"], prev_action)
        params = self.posterior(deter, token)
        return {"deter": deter, "stoch": self.latent(params, sample)}, params

    def observe(self, state, prev_actions, tokens, is_first):
        """Roll the posterior over a sequence: prev_actions (B, T, A), tokens (B, T, E), is_first (B, T).
        Returns the last state and {"deter": (B, T, D), "stoch": (B, T, S, K), "params": (B, T, S, ·)}."""
        steps = []
        with float32_for_few_rows(is_first.shape[0], tokens.device):
            for t in range(is_first.shape[1]):
                state, params = self.observe_step(state, prev_actions[:, t], tokens[:, t], is_first[:, t])
                steps.append((state["deter"], state["stoch"], params))
        deter, stoch, params = (torch.stack(x, 1) for x in zip(*steps))
        return state, {"deter": deter, "stoch": stoch, "params": params}

    @compiled
    def imagine_step(self, state, action, sample: bool = True):
        """Prior step from state (N, ·) and action (N, A)."""
        deter = self.core(state["deter"], state["stoch"], action)
        return {"deter": deter, "stoch": self.latent(self.prior(deter), sample)}

    def kl_losses(self, post_params, prior_params):
        """dyn = max(free, KL[sg(q) ‖ p]), rep = max(free, KL[q ‖ sg(p)]); each (B, T), KL summed
        over the latents. The clip acts per step, or with `free_average` on the batch mean (V1/V2:
        below `free_nats` the whole term is constant and passes no gradient)."""
        post, prior = self.dist(post_params), self.dist(prior_params)
        post_sg, prior_sg = self.dist(post_params.detach()), self.dist(prior_params.detach())
        dyn = post_sg.kl(prior)
        rep = post.kl(prior_sg)
        free = self.cfg.free_nats
        metrics = {"dyn_kl": dyn.mean().detach(), "prior_ent": prior.entropy().mean().detach(),
                   "post_ent": post.entropy().mean().detach()}
        if self.cfg.free_average:
            return clip_mean(dyn, free), clip_mean(rep, free), metrics
        return torch.clamp(dyn, min=free), torch.clamp(rep, min=free), metrics


def clip_mean(kl: torch.Tensor, free: float) -> torch.Tensor:
    """Per-step values whose mean is max(free, mean(kl)), with no gradient when mean(kl) < free;
    no host sync."""
    above = (kl.mean() >= free).to(kl.dtype).detach()
    return above * kl + (1 - above) * free
