"""Fast paths: speed techniques that sit beside the reference maths of `reverie.nn` and the models.

The model code states each algorithm as the papers do; where a technique computes the same thing
faster on some hardware, the reference code asks `enabled(name)` and calls the technique here.
Each is one switch of the config's `kernels` section (on by default where the throughput
benchmark showed it pays, README "Performance"), and each has a test that it gives the reference
path's values and gradients (tests/test_kernels.py):

    small_softmax     softmax over fewer than 16 classes along a transposed view on CPU (softmax.py)
    inverse_cdf       categorical samples by inverse CDF, one uniform per categorical (sampling.py)
    few_rows_float32  CPU work on fewer than 64 rows leaves bf16 autocast for float32 (precision.py)

Switches are scoped: `with kernels.use(cfg.kernels): ...` (an agent enters it around `act`,
`train_step` and `report`); outside any `use`, every switch is off and the reference path runs.
`use(..., compile=True)` (`run.compile`) runs the functions marked `@compiled` through
torch.compile (`compile.py`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

NAMES = ("small_softmax", "inverse_cdf", "few_rows_float32")

_active: dict[str, bool] = dict.fromkeys(NAMES, False)
_compile = False


def enabled(name: str) -> bool:
    """Whether the technique `name` is switched on in the current `use` scope."""
    return _active[name]


def switches(settings: Any) -> dict[str, bool]:
    """{name: bool} for every technique from a mapping or an object with those attributes
    (the config's `kernels` section); a name that is not a technique raises KeyError."""
    values = dict(settings) if isinstance(settings, Mapping) else {n: getattr(settings, n) for n in NAMES}
    unknown = set(values) - set(NAMES)
    if unknown:
        raise KeyError(f"unknown kernels {sorted(unknown)}; the techniques are {', '.join(NAMES)}")
    return {name: bool(values.get(name, False)) for name in NAMES}


def compiling() -> bool:
    """Whether the functions marked `@compiled` run through torch.compile (`run.compile`)."""
    return _compile


@contextlib.contextmanager
def use(settings: Any, compile: bool = False):
    """Switch the techniques as `settings` says (see `switches`) inside the block."""
    global _active, _compile
    saved = _active, _compile
    _active, _compile = switches(settings), compile
    try:
        yield
    finally:
        _active, _compile = saved


REFERENCE = dict.fromkeys(NAMES, False)  # `use(REFERENCE)`: the plain path everywhere
