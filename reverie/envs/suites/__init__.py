"""The benchmark suites of the DreamerV3 paper, addressed as env ids (DESIGN §4):

    dmc:<domain>_<task>   DeepMind Control (dm_control + mujoco), proprio and/or 64×64 pixels
    atari:<game>          Atari 2600 through ale-py (ROMs included), frame max-pooling, no-op starts
    crafter[:reward|:noreward]   Crafter, with its 22 achievements logged

Each suite module imports its dependency only when an env is built, so importing Reverie never
needs them; a missing dependency gives one line saying what to install. Builders are module-level
functions so that worker processes can pickle the env factory.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from reverie.config import EnvConfig
from reverie.envs.registry import Suite, register_suite


def crafter_score(success_rates_percent: list[float] | np.ndarray) -> float:
    """Crafter score (Hafner 2021, "Benchmarking the Spectrum of Agent Capabilities"):
    S = exp(mean_i ln(1 + s_i)) − 1, with s_i the success rate of achievement i in percent."""
    rates = np.asarray(success_rates_percent, dtype=np.float64)
    if rates.size == 0:
        return 0.0
    return float(np.exp(np.log1p(rates).mean()) - 1.0)


def _build_dmc(task: str, cfg: EnvConfig, seed: int) -> gym.Env:
    from reverie.envs.suites.dmc import build

    return build(task, cfg, seed)


def _check_dmc(task: str) -> None:
    from reverie.envs.suites.dmc import check_task

    check_task(task)


def _build_atari(task: str, cfg: EnvConfig, seed: int) -> gym.Env:
    from reverie.envs.suites.atari import build

    return build(task, cfg, seed)


def _check_atari(task: str) -> None:
    from reverie.envs.suites.atari import check_task

    check_task(task)


def _build_crafter(task: str, cfg: EnvConfig, seed: int) -> gym.Env:
    from reverie.envs.suites.crafter import build

    return build(task, cfg, seed)


def _check_crafter(task: str) -> None:
    from reverie.envs.suites.crafter import check_task

    check_task(task)


DMC = register_suite(Suite(
    name="dmc", build=_build_dmc, preset="dmc_proprio", requires=("dm_control", "mujoco"),
    install='pip install "reverie[dmc]" (dm-control with mujoco==3.17.0)',
    repeats_actions=True, check_task=_check_dmc,
))
ATARI = register_suite(Suite(
    name="atari", build=_build_atari, preset="atari100k", requires=("ale_py", "cv2"),
    install='pip install "reverie[atari]" (ale-py, which ships the ROMs, and opencv-python-headless)',
    repeats_actions=True, check_task=_check_atari,
))
CRAFTER = register_suite(Suite(
    name="crafter", build=_build_crafter, preset="crafter", requires=("crafter",),
    install='pip install "reverie[crafter]" (crafter, plus numba for fast world generation)',
    repeats_actions=False, check_task=_check_crafter, default_task="reward",
))
