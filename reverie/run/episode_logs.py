"""Per-episode statistics from the env's ``log/<name>`` step keys (e.g. Crafter's achievements).

An env reports values that are not observations under ``log/<name>`` (see ``GymEnv``); the value
at an episode's last step is that episode's value. Two kinds:

- ``log/achievement_<name>``: unlocked (> 0) or not in the episode. Reported as success rates in
  percent over every training episode so far (``achievements/<name>``, as the Crafter paper
  computes them over the whole run) and the Crafter score, the geometric mean
  exp(mean(ln(1 + s_i))) − 1 of the success rates s_i (``achievements/score``).
- any other ``log/<name>``: its mean over the episodes finished in the current log window
  (``episode/<name>``).

The running totals are part of the checkpoint, so success rates continue across a resume.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from ..envs.gym_adapter import LOG_PREFIX
from ..envs.suites import crafter_score

ACHIEVEMENT = "achievement_"


def split_log_keys(step: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(model/replay keys, log keys) of a step dict."""
    data = {k: v for k, v in step.items() if not k.startswith(LOG_PREFIX)}
    logs = {k[len(LOG_PREFIX):]: v for k, v in step.items() if k.startswith(LOG_PREFIX)}
    return data, logs


class EpisodeLogStats:
    """Collects the ``log/`` values of finished episodes; ``summary()`` gives the metric row part."""

    def __init__(self) -> None:
        self.unlocked: dict[str, int] = defaultdict(int)  # achievement -> episodes that unlocked it
        self.episodes = 0  # finished episodes that carried achievements
        self.window: dict[str, list[float]] = defaultdict(list)

    def add(self, logs: dict[str, np.ndarray], is_last: np.ndarray) -> None:
        """logs: {name: (N,)} of one vector step; is_last: (N,) bool."""
        if not logs:
            return
        for i in np.flatnonzero(is_last):
            has_achievements = False
            for name, values in logs.items():
                value = float(values[i])
                if name.startswith(ACHIEVEMENT):
                    has_achievements = True
                    self.unlocked[name[len(ACHIEVEMENT):]] += int(value > 0)
                else:
                    self.window[name].append(value)
            self.episodes += int(has_achievements)

    def success_rates(self) -> dict[str, float]:
        """Success rate in percent of each achievement over all episodes so far."""
        if not self.episodes:
            return {}
        return {name: 100.0 * count / self.episodes for name, count in sorted(self.unlocked.items())}

    def summary(self, window_had_episodes: bool) -> dict[str, float]:
        """Metric row entries; achievements only when an episode finished in this window."""
        row = {f"episode/{name}": float(np.mean(values)) for name, values in self.window.items() if values}
        self.window.clear()
        rates = self.success_rates()
        if rates and window_had_episodes:
            row.update({f"achievements/{name}": rate for name, rate in rates.items()})
            row["achievements/score"] = crafter_score(list(rates.values()))
        return row

    def state_dict(self) -> dict:
        return {"unlocked": dict(self.unlocked), "episodes": self.episodes}

    def load_state_dict(self, state: dict) -> None:
        self.unlocked = defaultdict(int, {str(k): int(v) for k, v in state.get("unlocked", {}).items()})
        self.episodes = int(state.get("episodes", 0))
