"""Recurrent state-space model: deterministic h_t (block GRU) and categorical z_t (DESIGN §4).

    h_t = f(h_{t−1}, z_{t−1}, a_{t−1})          sequence model (`core`)
    z_t ~ q(z_t | h_t, x_t)                      posterior (`posterior_logits`)
    ẑ_t ~ p(ẑ_t | h_t)                           prior (`prior_logits`)

A state is a dict {"deter": (N, D), "stoch": (N, S, K)}; `is_first` resets it (and the previous
action) to zero, as the current DreamerV3 does.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import RSSMConfig
from .distributions import OneHotCategorical
from .nets import BlockLinear, Dense, Linear, Norm, get_act


class RSSM(nn.Module):
    def __init__(self, cfg: RSSMConfig, token_dim: int, action_dim: int, norm="rms", act="silu"):
        super().__init__()
        self.cfg = cfg
        D, H, G = cfg.deter, cfg.hidden, cfg.blocks
        self.stoch_dim = cfg.stoch * cfg.classes
        # Sequence model: project h, z, a to `hidden` each, give every block its slice of h plus
        # all three projections, then a block-diagonal hidden layer and the GRU gates.
        self.in_deter = Dense(D, H, norm, act)
        self.in_stoch = Dense(self.stoch_dim, H, norm, act)
        self.in_action = Dense(action_dim, H, norm, act)
        block_in = D // G + 3 * H
        layers = []
        for i in range(cfg.dyn_layers):
            layers += [BlockLinear((block_in if i == 0 else D // G) * G, D, G), Norm(D, norm), get_act(act)]
        self.dyn_hidden = nn.Sequential(*layers)
        self.gates = BlockLinear(D if cfg.dyn_layers else block_in * G, 3 * D, G)
        # Prior and posterior heads.
        prior = [Dense(D if i == 0 else H, H, norm, act) for i in range(cfg.img_layers)]
        self.prior_net = nn.Sequential(*prior, Linear(H if prior else D, self.stoch_dim))
        post = [Dense(D + token_dim if i == 0 else H, H, norm, act) for i in range(cfg.obs_layers)]
        self.post_net = nn.Sequential(*post, Linear(H if post else D + token_dim, self.stoch_dim))

    # ---------------------------------------------------------------------------------------
    def initial(self, batch_size: int, device=None) -> dict[str, torch.Tensor]:
        return {
            "deter": torch.zeros(batch_size, self.cfg.deter, device=device),
            "stoch": torch.zeros(batch_size, self.cfg.stoch, self.cfg.classes, device=device),
        }

    def dist(self, logits: torch.Tensor) -> OneHotCategorical:
        """Distribution over the (…, S, K) latents, KL and entropy summed over the S variables."""
        return OneHotCategorical(logits, self.cfg.unimix, event_dims=1)

    def core(self, deter, stoch, action):
        """One GRU step: (N, D), (N, S, K), (N, A) → (N, D)."""
        G = self.cfg.blocks
        action = action / torch.clamp(action.abs(), min=1.0).detach()
        x = torch.cat([self.in_deter(deter), self.in_stoch(stoch.flatten(-2)), self.in_action(action)], -1)
        n = deter.shape[0]
        x = torch.cat([deter.reshape(n, G, -1), x.unsqueeze(1).expand(n, G, x.shape[-1])], -1)
        x = self.dyn_hidden(x.reshape(n, -1))
        reset, cand, update = self.gates(x).reshape(n, G, 3, -1).unbind(2)  # each (N, G, D/G)
        reset = torch.sigmoid(reset)
        cand = torch.tanh(reset * cand)
        update = torch.sigmoid(update - 1.0)
        return (update * cand + (1 - update) * deter.reshape(n, G, -1)).reshape(n, -1)

    def prior_logits(self, deter: torch.Tensor) -> torch.Tensor:
        """(…, D) → (…, S, K)."""
        return self.prior_net(deter).unflatten(-1, (self.cfg.stoch, self.cfg.classes))

    def posterior_logits(self, deter: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.post_net(torch.cat([deter, tokens], -1)).unflatten(-1, (self.cfg.stoch, self.cfg.classes))

    # ---------------------------------------------------------------------------------------
    def observe_step(self, state, prev_action, tokens, is_first, sample: bool = True):
        """Posterior step. state (N, ·), prev_action (N, A), tokens (N, E), is_first (N,)."""
        keep = (~is_first).to(tokens.dtype).unsqueeze(-1)  # (N, 1)
        deter = self.core(state["deter"] * keep, state["stoch"] * keep.unsqueeze(-1), prev_action * keep)
        logits = self.posterior_logits(deter, tokens)
        dist = self.dist(logits)
        stoch = dist.sample() if sample else dist.mode()
        return {"deter": deter, "stoch": stoch}, logits

    def observe(self, state, prev_actions, tokens, is_first):
        """Roll the posterior over a sequence: prev_actions (B, T, A), tokens (B, T, E), is_first (B, T).
        Returns the last state and {"deter": (B, T, D), "stoch": (B, T, S, K), "logits": (B, T, S, K)}."""
        deters, stochs, logits = [], [], []
        for t in range(tokens.shape[1]):
            state, logit = self.observe_step(state, prev_actions[:, t], tokens[:, t], is_first[:, t])
            deters.append(state["deter"])
            stochs.append(state["stoch"])
            logits.append(logit)
        seq = {"deter": torch.stack(deters, 1), "stoch": torch.stack(stochs, 1), "logits": torch.stack(logits, 1)}
        return state, seq

    def imagine_step(self, state, action, sample: bool = True):
        """Prior step from state (N, ·) and action (N, A)."""
        deter = self.core(state["deter"], state["stoch"], action)
        dist = self.dist(self.prior_logits(deter))
        return {"deter": deter, "stoch": dist.sample() if sample else dist.mode()}

    def kl_losses(self, post_logits, prior_logits):
        """dyn = max(free, KL[sg(q) ‖ p]), rep = max(free, KL[q ‖ sg(p)]); each (B, T), KL summed over latents."""
        post, prior = self.dist(post_logits), self.dist(prior_logits)
        post_sg, prior_sg = self.dist(post_logits.detach()), self.dist(prior_logits.detach())
        dyn = post_sg.kl(prior)
        rep = post.kl(prior_sg)
        free = self.cfg.free_nats
        metrics = {"dyn_kl": dyn.mean().detach(), "prior_ent": prior.entropy().mean().detach(),
                   "post_ent": post.entropy().mean().detach()}
        return torch.clamp(dyn, min=free), torch.clamp(rep, min=free), metrics

