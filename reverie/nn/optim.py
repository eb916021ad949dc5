"""The DreamerV3 optimiser: LaProp with adaptive gradient clipping and linear lr warm-up.

Per parameter tensor θ with gradient g, at its update t = 1, 2, ... (k = t − 1 = 0, 1, 2, ...):

1. adaptive gradient clipping (per tensor; off when `agc == 0`):
   g ← g / max(1, ‖g‖₂ / (agc · max(agc_pmin, ‖θ‖₂)))
2. v ← β2·v + (1 − β2)·g²,   v̂ = v / (1 − β2^t)
3. u = g / (√v̂ + eps)                      (RMS-normalise first ...)
4. m ← β1·m + (1 − β1)·u,    m̂ = m / (1 − β1^t)   (... then momentum: LaProp)
5. θ ← θ − lr_k·m̂,  lr_k = lr·min(1, k / warmup)  (lr_k = lr when warmup == 0)

The warm-up is the official one (optax `linear_schedule(0, lr, warmup)` evaluated at the update
count before it is incremented): the first update has lr 0, so it moves only m, v and t, and the
full lr is reached at update k = warmup, i.e. the (warmup + 1)-th.

`step(apply=flag)` with a bool 0-d tensor makes the whole update conditional without a host sync:
where the flag is False (e.g. a non-finite loss or gradient), θ, m, v and t keep their values
exactly, even when g holds NaN or inf.

Facts from danijar/dreamerv3 `embodied/jax/opt.py` (clip_by_agc, scale_by_rms, scale_by_momentum).

The update is written with `torch._foreach_*` ops over all tensors of a param group that share a
device and dtype, with no host syncs and no branches on tensor values, so `step()` can run inside
`torch.compile`. The step counter is a float32 0-d tensor per parameter (like torch's capturable
Adam), kept on the parameter's device; it saves and loads with `state_dict()`. float32 counts
exactly up to 2**24 ≈ 16.8M updates; past that the counter stops moving, which changes nothing
because warm-up and both bias corrections have long saturated by then.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from reverie.errors import ConfigError

__all__ = ["Adam", "LaProp", "global_norm"]


class _TensorStepOptimizer(torch.optim.Optimizer):
    """Base of our optimisers: per-parameter step counters are float32 tensors beside the parameter."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load state; step counters go to their parameter's device as float32, and every state
        tensor is this optimiser's own copy.

        torch's base class leaves `step` where it was saved (e.g. on the CPU after
        `torch.load(..., map_location="cpu")`); the foreach update wants it beside the parameter.
        It also keeps the given tensors where no cast is needed, so an in-memory `state_dict` of
        another optimiser would be shared and stepped by both (the in-place updates): copies here.
        """
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state.get(p)
                if not state:
                    continue
                for key, value in state.items():
                    if torch.is_tensor(value):
                        state[key] = value.clone()
                if "step" in state:
                    state["step"] = state["step"].to(device=p.device, dtype=torch.float32)


class LaProp(_TensorStepOptimizer):
    """LaProp (RMS-normalise, then momentum) with per-tensor AGC and linear warm-up.

    `params` is an iterable of tensors or of param-group dicts as for any torch optimiser; every
    hyper-parameter may be set per group (e.g. a different `lr`). A parameter whose `.grad` is
    None is skipped: its state and its step counter do not move. `p.grad` is never modified.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 4e-5,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-20,
        agc: float = 0.3,
        agc_pmin: float = 1e-3,
        warmup: int = 1000,
    ) -> None:
        _check_hyperparameters(lr, betas, eps, agc, agc_pmin, warmup)
        defaults = dict(
            lr=lr, betas=tuple(betas), eps=eps, agc=agc, agc_pmin=agc_pmin, warmup=warmup
        )
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group; its hyper-parameters are checked like the constructor's."""
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        _check_hyperparameters(
            group["lr"],
            group["betas"],
            group["eps"],
            group["agc"],
            group["agc_pmin"],
            group["warmup"],
        )

    @torch.no_grad()
    def step(
        self, closure: Callable[[], torch.Tensor] | None = None, apply: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """Apply one update to every parameter that has a gradient; returns `closure()` if given.

        `apply`: optional bool 0-d tensor; where False the update leaves every tensor unchanged."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("LaProp does not support sparse gradients")
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                params.append(p)
                grads.append(p.grad)
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
                steps.append(state["step"])
            if not params:
                continue
            beta1, beta2 = group["betas"]
            grouped = self._group_tensors_by_device_and_dtype(
                [params, grads, exp_avgs, exp_avg_sqs, steps]  # type: ignore[list-item]
            )
            for (dev_params, dev_grads, dev_avgs, dev_avg_sqs, dev_steps), _ in grouped.values():
                _laprop_foreach(
                    dev_params,  # type: ignore[arg-type]
                    dev_grads,  # type: ignore[arg-type]
                    dev_avgs,  # type: ignore[arg-type]
                    dev_avg_sqs,  # type: ignore[arg-type]
                    dev_steps,  # type: ignore[arg-type]
                    lr=group["lr"],
                    beta1=beta1,
                    beta2=beta2,
                    eps=group["eps"],
                    agc=group["agc"],
                    agc_pmin=group["agc_pmin"],
                    warmup=group["warmup"],
                    apply=apply,
                )
        return loss


def _laprop_foreach(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    steps: list[torch.Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    agc: float,
    agc_pmin: float,
    warmup: int,
    apply: torch.Tensor | None = None,
) -> None:
    """One LaProp update of tensors on one device with one dtype. All lists are aligned.

    The only Python branches are on hyper-parameters (`agc`, `warmup`, whether `apply` is given),
    never on tensor values. With `apply`, g is zeroed where it is False and every state change is
    scaled by keep = float(apply): v ← (1 − (1 − β2)·keep)·v + (1 − β2)·g², likewise for m, t and θ.
    """
    keep = None
    if apply is not None:
        keep = apply.to(device=params[0].device, dtype=torch.float32)  # () 1.0 or 0.0
        zero = torch.zeros((), dtype=grads[0].dtype, device=grads[0].device)
        grads = [torch.where(keep > 0, g, zero) for g in grads]  # NaN/inf never reach the state
        torch._foreach_add_(steps, keep)  # t ← t + keep
    else:
        torch._foreach_add_(steps, 1.0)  # t ← t + 1, on device

    # 1. Adaptive gradient clipping, per tensor: g ← g / max(1, ‖g‖ / (agc·max(pmin, ‖θ‖))).
    if agc > 0:
        grad_norms = torch._foreach_norm(grads)  # [()] per tensor
        limits = torch._foreach_norm(params)
        torch._foreach_clamp_min_(limits, agc_pmin)
        torch._foreach_mul_(limits, agc)
        ratios = torch._foreach_div(grad_norms, limits)
        torch._foreach_clamp_min_(ratios, 1.0)
        grads = torch._foreach_div(grads, ratios)  # new tensors: p.grad stays as it was

    # 2. Second moment with bias correction: v̂ = v / (1 − β2^t).
    torch._foreach_mul_(exp_avg_sqs, beta2 if keep is None else 1.0 - (1.0 - beta2) * keep)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)
    correction2 = _bias_correction(beta2, steps)  # 1 − β2^t

    # 3. u = g / (√v̂ + eps), built in the `normalised` buffer.
    normalised = torch._foreach_div(exp_avg_sqs, correction2)  # v̂
    torch._foreach_sqrt_(normalised)
    torch._foreach_add_(normalised, eps)
    torch._foreach_reciprocal_(normalised)
    torch._foreach_mul_(normalised, grads)  # u

    # 4. Momentum of the normalised gradient: m ← β1·m + (1 − β1)·u.
    if keep is None:
        torch._foreach_lerp_(exp_avgs, normalised, 1.0 - beta1)
    else:  # u = 0 where skipped, so only the decay needs the gate
        torch._foreach_mul_(exp_avgs, 1.0 - (1.0 - beta1) * keep)
        torch._foreach_add_(exp_avgs, normalised, alpha=1.0 - beta1)
    correction1 = _bias_correction(beta1, steps)  # 1 − β1^t

    # 5. θ ← θ − lr_k · m / (1 − β1^t), lr_k = lr·min(1, k / warmup) with k = t − 1 = 0, 1, ...
    if warmup > 0:
        step_sizes = torch._foreach_sub(steps, 1.0)  # k: 0 at the first update
        torch._foreach_clamp_min_(step_sizes, 0.0)  # a skipped first update leaves t = 0 (and keep = 0)
        torch._foreach_div_(step_sizes, float(warmup))
        torch._foreach_clamp_max_(step_sizes, 1.0)
        torch._foreach_mul_(step_sizes, lr)  # lr_k
        torch._foreach_div_(step_sizes, correction1)
    else:
        step_sizes = torch._foreach_reciprocal(correction1)
        torch._foreach_mul_(step_sizes, lr)
    if keep is not None:
        torch._foreach_mul_(step_sizes, keep)
    updates = torch._foreach_mul(exp_avgs, step_sizes)
    torch._foreach_sub_(params, updates)


class Adam(_TensorStepOptimizer):
    """Adam with global-norm clipping and decoupled weight decay: the optimisers of DreamerV3 2023
    (model lr 1e-4, eps 1e-8, clip 1000; actor and critic 3e-5, 1e-5, 100), DreamerV2 and V1.

        g ← g · min(1, clip / ‖g‖₂)   over all tensors of the optimiser (off when clip == 0)
        m ← β1·m + (1 − β1)·g,  v ← β2·v + (1 − β2)·g²,  m̂, v̂ bias-corrected
        θ ← θ − lr·(m̂ / (√v̂ + eps) + wd·θ)

    Like `LaProp`: foreach ops, no host syncs, step counters as tensors, and `step(apply=flag)`
    leaves every tensor unchanged where the bool tensor is False.
    """

    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, clip: float = 0.0, wd: float = 0.0) -> None:
        _check_hyperparameters(lr, betas, eps, 0.0, 1e-3, 0)
        if clip < 0 or wd < 0:
            raise ConfigError(f"optimiser clip and wd must be >= 0, got clip={clip!r}, wd={wd!r}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, clip=clip, wd=wd))

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None,
             apply: torch.Tensor | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
            _adam_foreach(params, [p.grad for p in params], [self.state[p]["exp_avg"] for p in params],
                          [self.state[p]["exp_avg_sq"] for p in params], [self.state[p]["step"] for p in params],
                          group, apply)
        return loss


def _adam_foreach(params, grads, exp_avgs, exp_avg_sqs, steps, group, apply) -> None:
    """One Adam update of aligned tensor lists (see `Adam`); gated by `apply` like `_laprop_foreach`."""
    beta1, beta2 = group["betas"]
    keep = None
    if apply is not None:
        keep = apply.to(device=params[0].device, dtype=torch.float32)  # () 1.0 or 0.0
        zero = torch.zeros((), dtype=grads[0].dtype, device=grads[0].device)
        grads = [torch.where(keep > 0, g, zero) for g in grads]
        torch._foreach_add_(steps, keep)
    else:
        torch._foreach_add_(steps, 1.0)
    if group["clip"] > 0:
        factor = torch.clamp(group["clip"] / (global_norm(grads) + 1e-6), max=1.0)  # ()
        grads = torch._foreach_mul(grads, factor)
    torch._foreach_mul_(exp_avgs, beta1 if keep is None else 1.0 - (1.0 - beta1) * keep)
    torch._foreach_add_(exp_avgs, grads, alpha=1.0 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2 if keep is None else 1.0 - (1.0 - beta2) * keep)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)
    denom = torch._foreach_div(exp_avg_sqs, _bias_correction(beta2, steps))  # v̂
    torch._foreach_sqrt_(denom)
    torch._foreach_add_(denom, group["eps"])
    updates = torch._foreach_div(exp_avgs, denom)
    torch._foreach_div_(updates, _bias_correction(beta1, steps))  # m̂ / (√v̂ + eps)
    if group["wd"] > 0:
        torch._foreach_add_(updates, params, alpha=group["wd"])
    torch._foreach_mul_(updates, group["lr"] if keep is None else group["lr"] * keep)
    torch._foreach_sub_(params, updates)


def _bias_correction(beta: float, steps: list[torch.Tensor]) -> list[torch.Tensor]:
    """1 − β^t per step counter, computed as −expm1(t·ln β).

    In float32, `1 − β^t` loses ~1e-5 relative precision for β = 0.999 (β itself rounds);
    ln β is taken in double precision on the host, so this form stays accurate. t is taken as at
    least 1: a first update that was skipped (`apply` False, t = 0) must not divide by zero.
    """
    if beta == 0.0:
        return [torch.ones_like(t) for t in steps]
    corrections = torch._foreach_clamp_min(steps, 1.0)
    torch._foreach_mul_(corrections, math.log(beta))  # t·ln β
    torch._foreach_expm1_(corrections)  # β^t − 1
    torch._foreach_neg_(corrections)
    return corrections


def global_norm(grads: Iterable[torch.Tensor | None]) -> torch.Tensor:
    """√(Σ‖g‖²) over the given tensors, skipping None; a 0-d float32 tensor, no host sync.

    With no tensors it returns 0. Norms of tensors on several devices are combined on the first
    tensor's device.
    """
    tensors = [g for g in grads if g is not None]
    if not tensors:
        return torch.zeros((), dtype=torch.float32)
    device = tensors[0].device
    norms = torch._foreach_norm(tensors)  # [()] per tensor
    stacked = torch.stack([n.to(device=device, dtype=torch.float32) for n in norms])  # (N,)
    return torch.linalg.vector_norm(stacked)


def _check_hyperparameters(
    lr: float, betas: tuple[float, float], eps: float, agc: float, agc_pmin: float, warmup: int
) -> None:
    """Raise `ConfigError` naming the `optim.*` config key of the first bad value."""
    if len(betas) != 2:
        raise ConfigError(f"optimiser betas must be a pair (beta1, beta2), got {betas!r}")
    beta1, beta2 = betas
    checks = [
        ("optim.lr", lr, lr >= 0, "must be >= 0"),
        ("optim.beta1", beta1, 0 <= beta1 < 1, "must be in [0, 1)"),
        ("optim.beta2", beta2, 0 <= beta2 < 1, "must be in [0, 1)"),
        ("optim.eps", eps, eps >= 0, "must be >= 0"),
        ("optim.agc", agc, agc >= 0, "must be >= 0 (0 disables clipping)"),
        ("optim.agc_pmin", agc_pmin, agc_pmin > 0 or agc == 0, "must be > 0 when optim.agc > 0"),
        ("optim.warmup", warmup, warmup >= 0, "must be >= 0 updates (0 disables warm-up)"),
    ]
    for key, value, ok, rule in checks:
        if not ok:
            raise ConfigError(
                f"{key} {rule}, got {value!r}: set a valid value in the config or as {key}=..."
            )
