"""CPU work on few rows leaves bf16 autocast for float32 (switch `few_rows_float32`).

The posterior loop steps over only B rows (16 in a 16 × 64 batch) and acting over N envs: at
such sizes a bf16 matmul is no faster than a float32 one, and every step would cast the weights
and activations again. Measured (XS dimensions, 64 posterior steps of 16 rows, forward +
backward, compiled, 2 threads, AMX): 343–371 ms in bf16, 253–287 ms in float32. Inputs computed
in bf16 outside (the posterior's token projection over all B·T rows) are promoted by the first
float32 operation that reads them.
"""

from __future__ import annotations

import contextlib

import torch

from reverie import kernels

FEW_ROWS = 64  # below this many rows a CPU step leaves bf16 autocast for float32


def float32_for_few_rows(rows: int, device: torch.device):
    """A context that turns CPU autocast off for work on fewer than FEW_ROWS rows, else (or with
    the switch off) a no-op."""
    if kernels.enabled("few_rows_float32") and device.type == "cpu" and rows < FEW_ROWS and torch.is_autocast_enabled("cpu"):
        return torch.autocast("cpu", enabled=False)
    return contextlib.nullcontext()


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype autocast computes matmuls in on x's device, or x's own dtype without autocast."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
