"""The collectives a data-parallel update needs; each one is a no-op in a world of one.

    average_gradients(params)   g ← (1/W) Σ_r g_r for every parameter with a gradient, after
                                backward and before the optimiser: each rank then applies the same
                                optimiser step (LaProp with AGC, Adam with its clip) to the same
                                gradient, so the weights stay identical on every rank. With each
                                rank's loss a mean over its B/W sequences, the average is the
                                gradient of the mean over all B.
    gather_rows(x)              the rows of every rank's x, concatenated (rank order): statistics
                                that normalise (return percentiles, TD-MPC2's Q scale) see the
                                whole job's batch, as the single process sees its whole batch
    all_true(flag)              a 0-d bool tensor that is True only where it is True on every
                                rank (the non-finite guard: one rank's bad batch skips the update
                                everywhere)
    all_min(values)             host integers, minimum over ranks (the loop's joint decisions)
    broadcast_state(module)     rank 0's parameters and buffers copied into every rank's module

None of them syncs the host with the device: the update stays free of `.item()`; the host-side
`all_min` runs in the loop between updates. The gradients travel in flat buckets of at most
`BUCKET` elements, one all-reduce each.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

BUCKET = 1 << 24  # elements per all-reduce (64 MiB of float32)


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def average_gradients(params: Iterable[torch.Tensor]) -> None:
    """Replace every parameter's gradient by its mean over the ranks, in place.

    Parameters without a gradient are left out; which ones have none is fixed by the code path,
    the same on every rank."""
    size = world_size()
    if size == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    for bucket in _buckets(grads):
        flat = _flatten_dense_tensors(bucket)
        dist.all_reduce(flat)
        flat.div_(size)
        for grad, reduced in zip(bucket, _unflatten_dense_tensors(flat, bucket)):
            grad.copy_(reduced)


def _buckets(grads: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Consecutive groups of one dtype and device of at most BUCKET elements (one tensor if larger)."""
    buckets: list[list[torch.Tensor]] = []
    size = 0
    for grad in grads:
        last = buckets[-1] if buckets else None
        if last is None or size + grad.numel() > BUCKET or (grad.dtype, grad.device) != (last[0].dtype, last[0].device):
            buckets.append([grad])
            size = grad.numel()
        else:
            last.append(grad)
            size += grad.numel()
    return buckets


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """(W · n, ...) — every rank's (n, ...) rows in rank order; x itself in a world of one. Not
    differentiable: for statistics under no_grad. Every rank must pass the same shape."""
    size = world_size()
    if size == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, 0)


def all_true(flag: torch.Tensor) -> torch.Tensor:
    """A 0-d bool: True only where `flag` is True on every rank."""
    if world_size() == 1:
        return flag
    value = flag.to(torch.int32).reshape(1)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return value.reshape(()).bool()


def all_min(values: list[int]) -> list[int]:
    """Each of the host integers' minimum over the ranks (every rank passes as many)."""
    if world_size() == 1:
        return list(values)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    tensor = torch.tensor(values, dtype=torch.int64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return [int(v) for v in tensor.tolist()]


@torch.no_grad()
def broadcast_state(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers into this rank's module (the same start everywhere)."""
    if world_size() == 1:
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=0)
