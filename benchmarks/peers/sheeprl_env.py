"""A separate virtual environment holding the peer library SheepRL, for the speed comparison.

SheepRL (https://github.com/Eclectic-Sheep/sheeprl, Apache-2.0) is another PyTorch DreamerV3. It is
never a dependency of Reverie: it lives in its own venv, built here on demand, and is driven only
through its public API by `sheeprl_update_timer.py`, run by that venv's python.

torch is installed first and pinned exactly (2.13.0, the CPU build already on the project machines'
disk); sheeprl 0.8.4 then goes in under a constraints file that holds torch at that version, so its
`torch>=2.6` requirement (and lightning's, torchmetrics') is met without pulling a CUDA build.

Standard library only, so that any Python (ours or a bare one) can import it:

    from peers.sheeprl_env import ensure_sheeprl_venv, PEER_NAME
    python = ensure_sheeprl_venv(Path("/work/peer/sheeprl-venv"))
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tempfile

PEER_NAME = "sheeprl 0.8.4"
SHEEPRL_VERSION = "0.8.4"
TORCH_VERSION = "2.13.0"

# What a working venv must import, and the versions it must report.
_CHECK = (
    "import importlib.metadata as m, torch, sheeprl, lightning, hydra, gymnasium; "
    "import sheeprl.algos.dreamer_v3.dreamer_v3; "
    f"assert m.version('sheeprl') == {SHEEPRL_VERSION!r}, m.version('sheeprl'); "
    f"assert torch.__version__.split('+')[0] == {TORCH_VERSION!r}, torch.__version__"
)


class PeerInstallError(RuntimeError):
    """Building the peer venv failed; the message names the command and ends with its output."""


def venv_python(path: pathlib.Path) -> pathlib.Path:
    return pathlib.Path(path) / "bin" / "python"


def _works(python: pathlib.Path) -> bool:
    if not python.exists():
        return False
    try:
        result = subprocess.run(
            [str(python), "-c", _CHECK], capture_output=True, text=True, timeout=300,
            env=_child_env(),
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # A venv of ours may be active in the calling process; the peer's pip and python must not see it.
    for key in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):
        env.pop(key, None)
    return env


def _run(cmd: list[str], log: list[str]) -> None:
    log.append("$ " + " ".join(cmd))
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, env=_child_env())
    except OSError as exc:
        raise PeerInstallError(f"building the {PEER_NAME} venv failed at:\n  " + " ".join(cmd) + f"\n{exc}") from exc
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-40:]
        raise PeerInstallError(
            f"building the {PEER_NAME} venv failed (exit {result.returncode}) at:\n  "
            + " ".join(cmd) + "\nlast lines of its output:\n" + "\n".join(tail)
        )


def ensure_sheeprl_venv(path: pathlib.Path, base_python: str | None = None) -> pathlib.Path:
    """Return the python of a venv at `path` holding sheeprl 0.8.4 on torch 2.13.0, building it if needed.

    Idempotent: a venv that already imports both at those versions is left as it is. Otherwise the
    venv is created (or reused, if only its packages are missing) and filled with:
      1. ``pip install torch==2.13.0``
      2. ``pip install -c <constraints: torch==2.13.0> sheeprl==0.8.4``
    `base_python` is the interpreter that creates the venv (default: this one). Raises
    PeerInstallError naming the failing command and the tail of its output.
    """
    path = pathlib.Path(path).expanduser().absolute()
    python = venv_python(path)
    if _works(python):
        return python

    log: list[str] = []
    if not python.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        _run([base_python or sys.executable, "-m", "venv", str(path)], log)
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check"]
    _run(pip + [f"torch=={TORCH_VERSION}"], log)
    with tempfile.TemporaryDirectory() as tmp:
        constraints = pathlib.Path(tmp) / "constraints.txt"
        constraints.write_text(f"torch=={TORCH_VERSION}\n")
        _run(pip + ["-c", str(constraints), f"sheeprl=={SHEEPRL_VERSION}"], log)

    if not _works(python):
        check = subprocess.run([str(python), "-c", _CHECK], capture_output=True, text=True, env=_child_env())
        tail = (check.stdout + check.stderr).strip().splitlines()[-40:]
        raise PeerInstallError(
            f"the {PEER_NAME} venv at {path} was built but does not import:\n  "
            + "\n  ".join(log) + f"\n$ {python} -c {_CHECK!r}\nlast lines of its output:\n" + "\n".join(tail)
        )
    return python


if __name__ == "__main__":  # python benchmarks/peers/sheeprl_env.py [/path/to/venv]
    import time

    target = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "/work/peer/sheeprl-venv")
    start = time.perf_counter()
    print(ensure_sheeprl_venv(target), f"({time.perf_counter() - start:.0f} s)")
