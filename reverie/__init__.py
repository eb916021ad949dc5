"""Reverie: world-model reinforcement learning in PyTorch (DreamerV3 and its family).

The top-level functions are imported lazily so that `import reverie.envs` (done by every env
worker process) does not pay for importing torch.
"""

__version__ = "0.1.0"
__all__ = ["build_config", "evaluate", "load", "train", "__version__"]


def __getattr__(name):
    if name in ("build_config", "evaluate", "load", "train"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'reverie' has no attribute {name!r}")
