"""Which torch device a run uses, from the `run.device` setting."""

from __future__ import annotations

import torch

from reverie.errors import UserError


def resolve_device(name: str, what: str = "run.device") -> torch.device:
    """`auto` (CUDA when torch sees a GPU, else the CPU), `cpu`, `cuda`, `cuda:N` or `mps`; a name
    that is not a device, or a device this machine lacks, raises `UserError` (`what` names the
    setting in the message)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UserError(f"{what} '{name}' is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "this torch build has no CUDA" if torch.version.cuda is None else "torch sees no GPU"
            raise UserError(f"{what} '{name}' is not available: {build} (torch {torch.__version__}); "
                            "use cpu or auto, or install a CUDA build of torch")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"{what} '{name}' is not available: torch sees {torch.cuda.device_count()} GPU(s); "
                            f"use cuda:0 … cuda:{torch.cuda.device_count() - 1}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"{what} '{name}' is not available on this machine; use cpu or auto")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"{what} '{name}' is not supported; use auto, cpu, cuda, cuda:N or mps")
    return device
