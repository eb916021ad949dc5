"""Recurrent state-space model: deterministic h_t (a GRU) and stochastic z_t (DESIGN §4, §5).

    h_t = f(h_{t−1}, z_{t−1}, a_{t−1})          sequence model (`core`)
    z_t ~ q(z_t | h_t, x_t)                      posterior (`posterior_stats`)
    ẑ_t ~ p(ẑ_t | h_t)                           prior (`prior_stats`)

A state is a dict {"deter": (N, D), "stoch": (N, S, K)}. The latent (`model.rssm.latent`) is
    categorical: S one-hot variables of K classes with a uniform mix (DreamerV2, V3);
    gaussian:    S Normal dims, K = 1, std = softplus(x) + min_std (PlaNet, Dreamer v1).
The sequence model (`model.rssm.core`) is
    block: the current DreamerV3 block-diagonal GRU over separate projections of h, z and a;
    gru:   one GRU cell, gates = Norm(W[x, h]), on x = Dense([z, a]) (DreamerV3 2023, V2, V1).
Both use the candidate tanh(r ⊙ c) and an update-gate bias of −1. `is_first` resets the state to
zeros or, with `model.rssm.initial=learned` (2023), to h_0 = tanh(w) and z_0 = the prior's mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reverie.config import RSSMConfig
from reverie.kernels.weight_tape import SequenceTape, StepTape, layout
from reverie.nn import maths as ops
from reverie.nn.distributions import Normal, OneHotCategorical
from reverie.nn.layers import BlockLinear, Dense, Linear, Norm, get_act, run_layer, tape_layers


class BlockGRU(nn.Module):
    """The current DreamerV3 core: h, z, a projected to `hidden` each, every block sees its slice
    of h plus all three projections, a block-diagonal hidden layer, then the gates."""

    def __init__(self, cfg: RSSMConfig, stoch_dim: int, action_dim: int, norm: str, act: str):
        super().__init__()
        D, H, G = cfg.deter, cfg.hidden, cfg.blocks
        self.blocks = G
        self.in_deter = Dense(D, H, norm, act)
        self.in_stoch = Dense(stoch_dim, H, norm, act)
        self.in_action = Dense(action_dim, H, norm, act)
        block_in = D // G + 3 * H
        layers = []
        for i in range(cfg.dyn_layers):
            layers += [BlockLinear((block_in if i == 0 else D // G) * G, D, G), Norm(D, norm), get_act(act)]
        self.dyn_hidden = nn.Sequential(*layers)
        self.gates = BlockLinear(D if cfg.dyn_layers else block_in * G, 3 * D, G)

    def embed_action(self, action):
        """(…, A) → (…, H): the action's projection, which does not depend on the state."""
        return self.in_action(action)

    def step_layers(self) -> dict[str, tuple]:
        """The linear maps a step runs, for a `weight_tape.SequenceTape` (in_action runs ahead)."""
        return {k: v for name in ("in_deter", "in_stoch", "dyn_hidden", "gates")
                for k, v in tape_layers(getattr(self, name), f"core.{name}").items()}

    def forward(self, deter, stoch, action_embed, tape=None):
        """(N, D), (N, S·K), (N, H) from `embed_action` → (N, D); `tape`: see `RSSM.observe`."""
        G, n = self.blocks, deter.shape[0]
        x = torch.cat([run_layer(self.in_deter, deter, tape, "core.in_deter"),
                       run_layer(self.in_stoch, stoch, tape, "core.in_stoch"), action_embed], -1)
        x = torch.cat([deter.reshape(n, G, -1), x.unsqueeze(1).expand(n, G, x.shape[-1])], -1)
        x = run_layer(self.dyn_hidden, x.reshape(n, -1), tape, "core.dyn_hidden")
        reset, cand, update = run_layer(self.gates, x, tape, "core.gates").reshape(n, G, 3, -1).unbind(2)  # (N, G, D/G)
        return gru_update(reset, cand, update, deter.reshape(n, G, -1)).reshape(n, -1)


class GRU(nn.Module):
    """One GRU cell (DreamerV3 2023, V2, V1): x = Dense([z, a]), gates = Norm(W[x, h])."""

    def __init__(self, cfg: RSSMConfig, stoch_dim: int, action_dim: int, norm: str, act: str):
        super().__init__()
        D, H = cfg.deter, cfg.hidden
        self.inputs = Dense(stoch_dim + action_dim, H, norm, act)
        norm = cfg.cell_norm or norm
        self.gates = nn.Sequential(Linear(H + D, 3 * D, bias=norm == "none"), Norm(3 * D, norm))

    def embed_action(self, action):
        """The action enters the input layer together with z, so nothing is computed ahead."""
        return action

    def step_layers(self) -> dict[str, tuple]:
        """The linear maps a step runs, for a `weight_tape.SequenceTape`."""
        return {**tape_layers(self.inputs, "core.inputs"), **tape_layers(self.gates, "core.gates")}

    def forward(self, deter, stoch, action, tape=None):
        """(N, D), (N, S·K), (N, A) → (N, D); `tape`: see `RSSM.observe`."""
        x = run_layer(self.inputs, torch.cat([stoch, action], -1), tape, "core.inputs")
        gates = run_layer(self.gates, torch.cat([x, deter], -1), tape, "core.gates")
        reset, cand, update = gates.chunk(3, -1)  # each (N, D)
        return gru_update(reset, cand, update, deter)


def gru_update(reset, cand, update, deter):
    """h' = u ⊙ tanh(σ(r) ⊙ c) + (1 − u) ⊙ h with u = σ(update − 1)."""
    cand = torch.tanh(torch.sigmoid(reset) * cand)
    update = torch.sigmoid(update - 1.0)
    return update * cand + (1 - update) * deter


class RSSM(nn.Module):
    def __init__(self, cfg: RSSMConfig, token_dim: int, action_dim: int, norm="rms", act="silu"):
        super().__init__()
        self.cfg = cfg
        D, H = cfg.deter, cfg.hidden
        self.gaussian = cfg.latent == "gaussian"
        self.latent_shape = (cfg.stoch, 1 if self.gaussian else cfg.classes)  # (S, K)
        self.stoch_dim = self.latent_shape[0] * self.latent_shape[1]
        stats = 2 * cfg.stoch if self.gaussian else self.stoch_dim  # mean and std, or logits
        self.stats_shape = (cfg.stoch, 2) if self.gaussian else self.latent_shape
        core = {"block": BlockGRU, "gru": GRU}[cfg.core]
        self.core_net = core(cfg, self.stoch_dim, action_dim, norm, act)
        prior = [Dense(D if i == 0 else H, H, norm, act) for i in range(cfg.img_layers)]
        self.prior_net = nn.Sequential(*prior, Linear(H if prior else D, stats))
        post = [Dense(D + token_dim if i == 0 else H, H, norm, act) for i in range(cfg.obs_layers)]
        self.post_net = nn.Sequential(*post, Linear(H if post else D + token_dim, stats))
        if cfg.initial == "learned":
            self.initial_deter = nn.Parameter(torch.zeros(D))
        self.tape_layout = layout(self.step_layers())  # where each step layer sits in a tape's probe

    # ---------------------------------------------------------------------------------------
    def initial(self, batch_size: int, device=None) -> dict[str, torch.Tensor]:
        """The state before the first step: zeros, or the learnt h_0 = tanh(w) with z_0 = prior mode."""
        if self.cfg.initial == "learned":
            deter = torch.tanh(self.initial_deter).expand(batch_size, -1)
            return {"deter": deter, "stoch": self.dist(self.prior_stats(deter)).mode()}
        return {"deter": torch.zeros(batch_size, self.cfg.deter, device=device),
                "stoch": torch.zeros(batch_size, *self.latent_shape, device=device)}

    def dist(self, stats: torch.Tensor):
        """Distribution over the (…, S, K) latents from (…, S, K) logits or (…, S, 2) mean/std
        statistics; log-probs, KL and entropy summed over the latents."""
        if self.gaussian:
            mean, std = stats.float().chunk(2, -1)  # (…, S, 1) each
            return Normal(mean, F.softplus(std) + self.cfg.min_std, event_dims=2)
        return OneHotCategorical(stats, self.cfg.unimix, event_dims=1)

    def embed_action(self, action: torch.Tensor) -> torch.Tensor:
        """(…, A) → the core's action input: actions scaled by 1/max(1, |a|), then projected where
        the core allows it (`BlockGRU.embed_action`); the posterior loop does this for all steps at once."""
        action = action / torch.clamp(action.abs(), min=1.0).detach()
        return self.core_net.embed_action(action)

    def core(self, deter, stoch, action):
        """One recurrent step: (N, D), (N, S, K), (N, A) → (N, D)."""
        return self.core_net(deter, stoch.flatten(-2), self.embed_action(action))

    def prior_stats(self, deter: torch.Tensor) -> torch.Tensor:
        """(…, D) → (…, S, K) logits or (…, S, 2) Normal statistics."""
        return self.prior_net(deter).unflatten(-1, self.stats_shape)

    def _posterior_input_layer(self) -> tuple[str, nn.Linear]:
        """The posterior's first linear layer and its name in `step_layers`."""
        return ("post.0.0", self.post_net[0][0]) if self.cfg.obs_layers else ("post.0", self.post_net[0])

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(…, E) → (…, P): the tokens' share W_x·x of the posterior's first layer W·[h, x] + b,
        which does not depend on the state; the posterior loop computes it for all steps at once."""
        return F.linear(tokens, self._posterior_input_layer()[1].weight[:, self.cfg.deter:])

    def posterior_stats(self, deter: torch.Tensor, token_embed: torch.Tensor, tape=None) -> torch.Tensor:
        """(…, D), (…, P) from `embed_tokens` → (…, S, K) logits or (…, S, 2) Normal statistics."""
        name, first = self._posterior_input_layer()
        weight = first.weight[:, :self.cfg.deter]  # the state's share
        if tape is None:
            x = F.linear(deter, weight, first.bias)
        else:
            x = tape.linear(name, deter, weight, first.bias)
        x = x + token_embed
        if self.cfg.obs_layers:  # the first Dense's norm and activation
            x = self.post_net[0][2](self.post_net[0][1](x))
        for i in range(1, len(self.post_net)):
            x = run_layer(self.post_net[i], x, tape, f"post.{i}")
        return x.unflatten(-1, self.stats_shape)

    def step_layers(self) -> dict[str, tuple]:
        """The linear maps of a posterior step, name → (weight, bias, kind), for a weight tape;
        the first posterior layer contributes its state columns only."""
        layers = {**self.core_net.step_layers(), **tape_layers(self.post_net, "post")}
        name, first = self._posterior_input_layer()
        layers[name] = (first.weight[:, :self.cfg.deter], first.bias, "linear")
        return layers

    # ---------------------------------------------------------------------------------------
    def observe_step(self, state, prev_action, tokens, is_first, sample: bool = True):
        """Posterior step. state (N, ·), prev_action (N, A), tokens (N, E), is_first (N,)."""
        keep = (~is_first).to(tokens.dtype).unsqueeze(-1)  # (N, 1)
        return self.posterior_step(state, self.embed_action(prev_action * keep), self.embed_tokens(tokens), keep,
                                   sample=sample)

    def posterior_step(self, state, action_embed, token_embed, keep, probe=None, sample: bool = True):
        """Posterior step from the state-independent inputs: action_embed (N, ·) from `embed_action`
        of the previous action (zeroed where an episode starts), token_embed (N, P) from
        `embed_tokens`, keep (N, 1) 0 where an episode starts and 1 elsewhere. Returns the state
        and the posterior statistics, and with `probe` (N, ΣO) (a `SequenceTape`'s for this step)
        also the taped layers' inputs (N, ΣI)."""
        tape = None if probe is None else StepTape(probe, self.tape_layout)
        deter, stoch = state["deter"] * keep, state["stoch"] * keep.unsqueeze(-1)
        if self.cfg.initial == "learned":
            start = self.initial(deter.shape[0])
            deter = deter + (1 - keep) * start["deter"]
            stoch = stoch + (1 - keep).unsqueeze(-1) * start["stoch"]
        deter = self.core_net(deter, stoch.flatten(-2), action_embed, tape)
        stats = self.posterior_stats(deter, token_embed, tape)
        dist = self.dist(stats)
        stoch = dist.sample() if sample else dist.mode()
        if tape is None:
            return {"deter": deter, "stoch": stoch}, stats
        return {"deter": deter, "stoch": stoch}, stats, tape.recorded()

    def observe(self, state, prev_actions, tokens, is_first):
        """Roll the posterior over a sequence: prev_actions (B, T, A), tokens (B, T, E), is_first (B, T).
        Returns the last state and {"deter": (B, T, D), "stoch": (B, T, S, K), "stats": (B, T, S, ·)}.

        The inputs that do not depend on the state (the action's projection, the tokens' share of
        the posterior layer) are computed for all B·T steps before the loop: one large matmul
        instead of T small ones, each gradient formed once (`unbind`, not T zero-padded selects).
        The step's own weight gradients are formed once per sequence too (`weight_tape`)."""
        B, T = is_first.shape
        keep = (~is_first).float().unsqueeze(-1)  # (B, T, 1)
        action_embed = self.embed_action(prev_actions * keep).unbind(1)  # T × (B, ·)
        token_embed = self.embed_tokens(tokens).unbind(1)  # T × (B, P)
        matmul_dtype = ops.compute_dtype(keep)  # the sequence's autocast dtype, for the weight gradients
        deters, stochs, stats = [], [], []
        with ops.float32_for_few_rows(B, tokens.device):
            layers = self.step_layers()
            tape = None
            if SequenceTape.wanted(layers):
                tape = SequenceTape(layers, T, B, ops.compute_dtype(keep), matmul_dtype)
            for t, keep_t in enumerate(keep.unbind(1)):
                if tape is None:
                    state, stat = self.posterior_step(state, action_embed[t], token_embed[t], keep_t)
                else:
                    state, stat, inputs = self.posterior_step(
                        state, action_embed[t], token_embed[t], keep_t, tape.probe(t))
                    tape.record(inputs)
                deters.append(state["deter"])
                stochs.append(state["stoch"])
                stats.append(stat)
        if tape is not None:
            tape.finish()
        seq = {"deter": torch.stack(deters, 1), "stoch": torch.stack(stochs, 1), "stats": torch.stack(stats, 1)}
        return state, seq

    def imagine_step(self, state, action, sample: bool = True):
        """Prior step from state (N, ·) and action (N, A)."""
        deter = self.core(state["deter"], state["stoch"], action)
        dist = self.dist(self.prior_stats(deter))
        return {"deter": deter, "stoch": dist.sample() if sample else dist.mode()}

    def kl_losses(self, post_stats, prior_stats):
        """dyn = max(free, KL[sg(q) ‖ p]), rep = max(free, KL[q ‖ sg(p)]); each (B, T), KL summed
        over the latents. The clip acts per step, or with `free_average` on the batch mean (V1/V2:
        below `free_nats` the whole term is constant and passes no gradient)."""
        post, prior = self.dist(post_stats), self.dist(prior_stats)
        post_sg, prior_sg = self.dist(post_stats.detach()), self.dist(prior_stats.detach())
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
