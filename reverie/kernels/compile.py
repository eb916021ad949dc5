"""What `run.compile` compiles: every function marked `@compiled` — the one list is `COMPILED`.

A marked function runs through `torch.compile` (static shapes) inside `kernels.use(...,
compile=True)`, which an agent enters when `run.compile` is on, and as itself everywhere else.
Each is compiled on its first call in that scope, once per input shape (methods also once per
instance); inside another compiled function it is traced inline. The marked functions are those
an update runs many times over few rows (the posterior and prior steps) or over large memory-bound
tensors (the CNNs, the heads, the two-hot and image losses), where fusing the elementwise chains
(norms, activations, gates, softmax, casts) into a few kernels pays. Nothing is rebound on an
instance: the model code calls its functions as written.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch

from reverie import kernels

COMPILED: list[str] = []  # the qualified names of the marked functions, in import order


def compiled(fn: Callable) -> Callable:
    """Mark `fn` to run through torch.compile under `run.compile` (see the module docstring)."""
    COMPILED.append(f"{fn.__module__}.{fn.__qualname__}")
    compiled_fn = None

    @functools.wraps(fn)
    def run(*args, **kwargs):
        nonlocal compiled_fn
        if not kernels.compiling() or torch.compiler.is_compiling():
            return fn(*args, **kwargs)
        if compiled_fn is None:
            compiled_fn = torch.compile(fn, dynamic=False)
        return compiled_fn(*args, **kwargs)

    return run


def prepare() -> None:
    """Settings for compiled updates: random ops keep torch's eager generator (a compiled update
    draws the samples an eager one draws), and room for one graph per agent in a process."""
    import torch._inductor.config as inductor_config

    inductor_config.fallback_random = True
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
