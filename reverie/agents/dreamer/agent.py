"""The agent: world model + imagination actor-critic (or a CEM planner) + their optimisers.

DreamerV3 trains everything with one LaProp optimiser on the sum of the losses. The older
variants (`optim.kind=adam`) have one Adam per module group — world model, actor, critic — and
each group's parameters take the gradient of its own losses only (LOSS_GROUPS); gradients are
routed the same way whenever the actor backpropagates through the model, so the actor loss never
moves the world model or the critic.

It implements the agent contract (`reverie.agents.contract`): the carried state is the RSSM's
{deter, stoch} and the previous action; with the replay context (`replay.context` C > 0) `act`
returns each step's latent as replay extras and `train_step` starts from the stored latent of a
window's step C−1 and returns the recomputed latents to write back (`replay_context.py`); the
checkpointed state is the weights (slow critic and return normaliser included) and the optimisers'
states. With Plan2Explore (`behavior.explore`, explore.py) an exploration actor acts in training
and the task actor is evaluated.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from reverie import distributed, kernels
from reverie.agents import MODES, WRITE_BACK_PREFIX, register
from reverie.agents.dreamer import explore, planning, replay_context
from reverie.agents.dreamer.actor_critic import ActorCritic
from reverie.agents.dreamer.world_model import WorldModel
from reverie.config import Config
from reverie.kernels import compile as compile_kernels
from reverie.kernels.precision import float32_for_few_rows
from reverie.nn.optim import Adam, LaProp, global_norm
from reverie.planners import MPPIPlanner

LOSS_GROUPS = {"model": ("rec", "rew", "con", "dyn", "rep", "repval"), "actor": ("policy",),
               "critic": ("value", "repval"), **explore.LOSS_GROUPS}  # which losses train which parameters


@register("dreamer")
class DreamerAgent(nn.Module):
    eval_mode = "eval"  # the policy's mode; "train" samples

    def __init__(self, obs_space: dict, act_space, cfg: Config, device: str | torch.device = "cpu"):
        super().__init__()
        self.batch_size, self.sequence_length = cfg.batch_size, cfg.batch_length
        self.cfg = cfg
        self.obs_space = dict(obs_space)
        self.act_space = act_space
        self.device = torch.device(device)
        self.wm = WorldModel(obs_space, act_space.dim, cfg)
        b = cfg.behavior
        self.planner = None
        if b.kind == "planner":  # PlaNet's CEM or TD-MPC2's MPPI on the world model, optionally with a critic's value
            self.planner = planning.make_planner(cfg, act_space)
        needs_ac = b.kind == "actor_critic" or b.planner.value
        if needs_ac and b.explore.enabled:  # Plan2Explore: the task actor-critic plus an exploration one (explore.py)
            self.ac = explore.Plan2Explore(self.wm.feat_dim, self.wm.rssm.stoch_dim, act_space, b, cfg.model.norm,
                                           cfg.model.act)
        else:
            self.ac = ActorCritic(self.wm.feat_dim, act_space, b, cfg.model.norm, cfg.model.act) if needs_ac else None
        self.context_length = cfg.replay.context  # C steps before each sequence: the replay context
        # stored beside the observations, action and step flags: each step's latent, for the context
        self.replay_fields = replay_context.latent_fields(self.wm.rssm) if self.context_length else {}
        self.obs_keys = sorted(set(self.wm.encoder.mlp_keys + self.wm.encoder.cnn_keys
                                   + self.wm.decoder.mlp_keys + self.wm.decoder.cnn_keys))
        self.to(self.device)
        self.param_groups = {"model": list(self.wm.parameters())}
        if self.ac is not None:
            self.param_groups.update(actor=list(self.ac.actor.parameters()), critic=list(self.ac.critic.parameters()))
        if isinstance(self.ac, explore.Plan2Explore):  # expl_actor, expl_critic, ensemble
            self.param_groups.update(self.ac.param_groups())
        o = cfg.optim
        if o.kind == "laprop":
            params = [p for group in self.param_groups.values() for p in group]
            self.optimizers = {"all": LaProp(params, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, agc=o.agc,
                                             agc_pmin=o.agc_pmin, warmup=o.warmup)}
        else:
            self.optimizers = {name: Adam(params, lr=g.lr, betas=(o.beta1, o.beta2), eps=g.eps, clip=g.clip, wd=g.wd)
                               for name, params in self.param_groups.items()
                               for g in [getattr(o, explore.OPTIM.get(name, name))]}
        self.route_gradients = o.kind == "adam" or (self.ac is not None and self.ac.backprop)
        scales = cfg.loss_scales
        self.scales = {k: getattr(scales, k) for k in ("rec", "rew", "con", "dyn", "rep", "policy", "value", "repval")}
        if isinstance(self.ac, explore.Plan2Explore):
            self.scales.update(self.ac.loss_scales(scales))
        if cfg.run.compile:  # the functions marked @compiled (kernels.compile.COMPILED) run compiled
            compile_kernels.prepare()

    # ------------------------------------------------------------------------------------------
    def init_state(self, batch_size: int) -> dict[str, torch.Tensor]:
        """The carry of a fresh episode: {deter, stoch, action} zeros (the learnt initial state is set at
        the first step), with MPPI also its previous plan's mean "plan" (N, H, A)."""
        state = self.wm.initial(batch_size, self.device)
        if isinstance(self.planner, MPPIPlanner):
            state["plan"] = self.planner.initial_mean(batch_size, self.device)
        return state

    @contextlib.contextmanager
    def _compute_scope(self):
        """The precision (`run.precision`) and the speed techniques (`kernels`) of every call."""
        with kernels.use(self.cfg.kernels, compile=self.cfg.run.compile):
            if self.cfg.run.precision == "bfloat16":
                with torch.autocast(self.device.type, dtype=torch.bfloat16):
                    yield
            else:
                yield

    def to_tensors(self, data: dict) -> dict[str, torch.Tensor]:
        """numpy (or tensors) → tensors on the agent's device; uint8 images stay uint8."""
        out = {}
        for key, value in data.items():
            tensor = torch.as_tensor(value)
            if tensor.dtype == torch.float64:
                tensor = tensor.float()
            out[key] = tensor.to(self.device, non_blocking=True)
        return out

    @torch.no_grad()
    def act(self, state: dict[str, torch.Tensor], obs: dict, mode: str = "train"):
        """One policy step for N envs: obs holds (N, ...) observation keys and is_first (N,).
        Returns the new state, actions (N, A) as a float32 numpy array in the agent's action
        format (one-hots for discrete, [-1, 1] for continuous) and the replay extras: the latent each
        step reached with the replay context, else {}."""
        if mode not in MODES:
            raise ValueError(f"unknown act mode '{mode}'; use train, eval or random")
        data = self.to_tensors({k: obs[k] for k in self.wm.encoder.mlp_keys + self.wm.encoder.cnn_keys})
        is_first = torch.as_tensor(obs["is_first"], device=self.device).bool()
        with self._compute_scope():
            tokens = self.wm.encoder(data)
            few_rows = float32_for_few_rows(len(is_first), self.device)  # kernel: small steps skip bf16
            with few_rows:
                rssm_state, _ = self.wm.rssm.observe_step(
                    {"deter": state["deter"], "stoch": state["stoch"]}, state["action"], tokens.float(), is_first)
            if mode == "random":
                action = torch.as_tensor(self.act_space.sample_random(np.random.default_rng(), len(is_first)),
                                         device=self.device, dtype=torch.float32)
            elif self.planner is not None:
                action, plan = self.plan(rssm_state, state.get("plan"), is_first, mode)  # candidates × envs rows
            else:
                with few_rows:
                    policy = self.behavior_for(mode, len(is_first))(self.wm.features(rssm_state))
                    action = policy.sample() if mode == "train" else policy.mode()
        action = action.float()
        if not self.act_space.discrete:
            noise = self.cfg.behavior.actor.expl_noise
            if mode == "train" and noise > 0:  # Dreamer v1's exploration noise
                action = action + noise * torch.randn_like(action)
            action = action.clamp(-1.0, 1.0)
        new_state = {"deter": rssm_state["deter"].float(), "stoch": rssm_state["stoch"].float(), "action": action}
        if "plan" in state:
            new_state["plan"] = plan if mode != "random" else state["plan"]
        extras = {}
        if self.context_length:
            extras = {k: v.cpu().numpy() for k, v in replay_context.encode(self.wm.rssm, rssm_state).items()}
        return new_state, action.cpu().numpy(), extras

    # ------------------------------------------------------------------------------------------
    def compute_losses(self, data: dict[str, torch.Tensor]):
        """All losses of one update on a (B, C + T) batch: ({name: per-sample loss (B, T)}, metrics);
        with the replay context the metrics hold the recomputed latents under `replay/` keys."""
        B = data["is_first"].shape[0]
        start = self.wm.initial(B, self.device)
        if self.context_length:
            start, data = replay_context.split(data, self.context_length, start, self.wm.rssm)
        with self._compute_scope():
            losses, post, metrics = self.wm.loss(data, start)
            if self.context_length:
                metrics.update(replay_context.write_back(self.wm.rssm, post))
            if self.ac is not None:
                ac_losses, ac_metrics = self.ac.loss(self.wm, post, data, self.cfg.model.contdisc)
                losses.update(ac_losses)
                metrics.update(ac_metrics)
        return losses, metrics

    def plan(self, state: dict[str, torch.Tensor], previous: torch.Tensor | None = None,
             is_first: torch.Tensor | None = None, mode: str = "train"):
        """Planned actions (N, A) from RSSM states and what the planner carries to the next step:
        CEM (stateless, PlaNet) and search → None; MPPI → its plan's mean (N, H, A), warm-started from `previous`
        except where `is_first`. With `behavior.planner.value` the critic's value at the horizon
        (a DreamerV3-style critic under the planner), and for MPPI the actor's rollouts as its prior."""
        use_value = self.cfg.behavior.planner.value
        if isinstance(self.planner, planning.SearchPlanner):
            return self.planner.plan(self.wm, self.ac, state, explore=mode == "train"), None
        if isinstance(self.planner, MPPIPlanner):
            if previous is not None and is_first is not None:
                previous = torch.where(is_first[:, None, None], torch.zeros_like(previous), previous)
            model = planning.RSSMLatentModel(self.wm, self.ac, use_value, self.planner.discount)
            return self.planner.plan(model, state, previous, eval_mode=mode == "eval")
        value_fn = None
        if use_value:
            value_fn = lambda feat: self.ac.critic(feat).mean()
        return self.planner.plan(self.wm, state, value_fn=value_fn), None

    def train_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """One gradient update of world model, actor and critic on a (B, C + T) batch.

        Non-finite guard, without a host sync: when the batch, the loss or the global gradient norm
        holds NaN or inf, the update is skipped as a whole (weights, optimiser state, slow critic and the
        return normaliser keep their values) and `train/nonfinite` is 1 in the metrics."""
        self.train()
        data = self.to_tensors(batch)
        buffers = [b for b in self.buffers() if b.is_floating_point()]  # the return normaliser's EMAs
        saved = [b.clone() for b in buffers]
        losses, metrics = self.compute_losses(data)
        scaled = {k: self.scales[k] * v.float().mean() for k, v in losses.items()}
        total = sum(scaled.values())
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        self.backward(scaled, total)
        distributed.average_gradients(p for group in self.param_groups.values() for p in group)  # over the ranks
        grad_norm = global_norm(p.grad for group in self.param_groups.values() for p in group)
        # NaN rewards could pass the two-hot loss as its end bin, so the batch itself is checked too.
        data_finite = torch.stack([torch.isfinite(v).all() for v in data.values() if v.is_floating_point()]).all()
        finite = distributed.all_true(torch.isfinite(total) & torch.isfinite(grad_norm) & data_finite)  # () bool
        for optimizer in self.optimizers.values():
            optimizer.step(apply=finite)
        if self.ac is not None:
            self.ac.update_slow_critic(apply=finite)
        with torch.no_grad():
            for buffer, old in zip(buffers, saved):
                buffer.copy_(torch.where(finite, buffer, old))
        metrics = {k: v.detach() for k, v in metrics.items()}
        for key in replay_context.KEYS if self.context_length else ():  # a skipped update writes back
            out = WRITE_BACK_PREFIX + key  # what replay held: no NaN latent enters it
            metrics[out] = torch.where(finite, metrics[out], data[key][:, self.context_length:])
        metrics.update({f"loss/{k}": v.detach().float().mean() for k, v in losses.items()})
        metrics["loss/total"] = total.detach()
        metrics["train/grad_norm"] = grad_norm
        metrics["train/nonfinite"] = (~finite).float()
        return metrics

    def backward(self, scaled: dict[str, torch.Tensor], total: torch.Tensor) -> None:
        """Gradients of the scaled losses: of their sum into every parameter, or, when routing,
        of each group's losses (LOSS_GROUPS) into that group's parameters only."""
        if not self.route_gradients:
            total.backward()
            return
        jobs = [(self.param_groups[name], sum(scaled[k] for k in keys if k in scaled))
                for name, keys in LOSS_GROUPS.items() if any(k in scaled for k in keys)]
        for i, (params, loss) in enumerate(jobs):
            loss.backward(inputs=params, retain_graph=i < len(jobs) - 1)

    @torch.no_grad()
    def report(self, batch: dict, context: int = 5) -> dict[str, torch.Tensor]:
        """Open-loop predictions: observe the first `context` steps of each sequence, then imagine
        the rest from the recorded actions alone. Returns, per decoded key, the truth and the
        prediction (B, T, ...) and the mean squared error of the open-loop part. A categorical
        key's prediction is the one-hot of each block's most likely class."""
        self.eval()
        data = self.to_tensors(batch)
        B, T = data["is_first"].shape
        wm = self.wm
        obs = {k: data[k].flatten(0, 1) for k in wm.encoder.mlp_keys + wm.encoder.cnn_keys}
        tokens = wm.encoder(obs).unflatten(0, (B, T))
        initial = wm.initial(B, self.device)
        prev_actions = torch.cat([initial["action"].unsqueeze(1), data["action"][:, :-1]], 1)
        state, post = wm.rssm.observe(
            {"deter": initial["deter"], "stoch": initial["stoch"]},
            prev_actions[:, :context], tokens[:, :context], data["is_first"][:, :context])
        deters, stochs = [post["deter"]], [post["stoch"]]
        for t in range(context, T):
            state = wm.rssm.imagine_step(state, prev_actions[:, t], sample=False)
            deters.append(state["deter"].unsqueeze(1))
            stochs.append(state["stoch"].unsqueeze(1))
        deter, stoch = torch.cat(deters, 1), torch.cat(stochs, 1)
        recon = wm.decoder(deter.flatten(0, 1), stoch.flatten(0, 1).flatten(-2))
        out = {}
        for key, dist in recon.items():
            pred = wm.decoder.mode(key, dist).unflatten(0, (B, T))  # one-hots for categorical keys
            truth = data[key]
            if key in wm.decoder.cnn_keys:
                pred = (pred * 255).clamp(0, 255).to(torch.uint8)
            out[f"openloop/{key}/truth"] = truth
            out[f"openloop/{key}/pred"] = pred
            err = (pred.float() - truth.float())[:, context:]
            out[f"openloop/{key}/mse"] = err.square().mean()
        return out

    # ------------------------------------------------------------------------------------------
    def state_dict(self, *args, **kwargs):
        """Weights (incl. slow critic and return normaliser) and the optimisers' states."""
        return {"modules": super().state_dict(*args, **kwargs),
                "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()}}

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state["modules"], strict=strict, assign=assign)
        if state["optimizers"].keys() != self.optimizers.keys():
            raise KeyError(f"optimisers {sorted(state['optimizers'])} in the checkpoint, "
                           f"{sorted(self.optimizers)} in this config")
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        return result

    # ------------------------------------------------------------------------------------------
    # Plan2Explore (behavior.explore, explore.py): which actor acts
    def behavior_for(self, mode: str, envs: int = 0):
        """The actor `act` samples from ("train") or takes the mode of (`eval_mode`) for one call of
        `envs` envs: with Plan2Explore in "train" mode the exploration actor for the first
        `behavior.explore.until` train-mode policy steps (0: all), which it counts, else the task
        actor `self.ac.actor` (always without Plan2Explore)."""
        if isinstance(self.ac, explore.Plan2Explore):
            return self.ac.actor_for(mode, envs)
        return self.ac.actor
