"""CPU threads that fit the cores a run may use and that other processes leave free.

torch runs its CPU kernels on an OpenMP team of `torch.get_num_threads()` threads. When the
machine's cores are shared (a second seed, a notebook, an evaluation), a team as large as the core
count waits on threads that get no core, and OpenMP's spin-waiting burns the cores the others
need: measured on a 2-core machine with 1–1.4 cores busy elsewhere, a debug update ran at 0.4–1.6
updates/s with 2 threads against 13.6 with 1 (issue 22).

`ThreadGovernor` picks the thread count from

    cores  = min(|sched_getaffinity|, cgroup CPU quota)             the cores this process may use
    others = busy time of those cores − this process's own CPU time, over the last interval
    threads = clamp(floor(cores − others + 0.3), 1, cores)           (0.3: a little idle noise is free)

and re-measures every `interval` seconds, so a run gives cores back when a neighbour starts and
takes them again when it ends. Work in env worker processes counts as `others` (it is not this
process's time), so a run's own workers leave it fewer threads. Linux only (`/proc/stat`); elsewhere
the count is the affinity size. `run.threads=N` fixes N threads instead.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch

CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1 = (Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))
IDLE_SLACK = 0.3  # cores of others' load still counted as free (shells, monitors, an idle notebook)


def usable_cores() -> int:
    """Cores this process may run on: its affinity mask, capped by a cgroup CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    return max(1, min(cores, math.ceil(quota)) if quota else cores)


def cgroup_cpu_quota() -> float | None:
    """The cgroup's CPU limit in cores (`cpu.max` quota / period), or None without a limit."""
    try:
        quota, period = CGROUP_V2.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us, period_us = (int(p.read_text()) for p in CGROUP_V1)
        return quota_us / period_us if quota_us > 0 else None
    except (OSError, ValueError):
        return None


def _cpu_times(cpus: set[int]) -> tuple[float, float] | None:
    """(busy, total) clock ticks of the given CPUs since boot, from /proc/stat; None elsewhere."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    busy = total = 0.0
    for line in lines:
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        ticks = [float(f) for f in fields[:8]]  # user nice system idle iowait irq softirq steal
        total += sum(ticks)
        busy += sum(ticks) - ticks[3] - ticks[4]
    return busy, total


class LoadProbe:
    """Cores kept busy by other processes on the CPUs this process may use, between two calls."""

    def __init__(self) -> None:
        try:
            self.cpus = set(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            self.cpus = set(range(os.cpu_count() or 1))
        self.ticks_per_second = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._last = self._read()

    def _read(self) -> tuple[float, float, float] | None:
        times = _cpu_times(self.cpus)
        if times is None:
            return None
        own = os.times()
        return times[0], times[1], (own.user + own.system) * self.ticks_per_second

    def others(self) -> float | None:
        """Cores busy with other work since the last call (None when it cannot be measured)."""
        now = self._read()
        last, self._last = self._last, now
        if now is None or last is None or now[1] <= last[1]:
            return None
        busy, total, own = (a - b for a, b in zip(now, last))
        cores = len(self.cpus) * busy / total  # busy cores on average over the interval
        own_cores = len(self.cpus) * own / total
        return max(0.0, cores - own_cores)


def threads_for(cores: int, others: float | None) -> int:
    """The thread count for `cores` usable cores with `others` cores busy elsewhere."""
    if others is None:
        return cores
    return max(1, min(cores, math.floor(cores - others + IDLE_SLACK)))


class ThreadGovernor:
    """Keeps torch's thread count fitted to the free cores (`fixed` > 0: that many, always)."""

    def __init__(self, fixed: int = 0, interval: float = 5.0, clock=time.monotonic, probe: LoadProbe | None = None,
                 cores: int | None = None) -> None:
        self.fixed, self.interval, self._clock = int(fixed), float(interval), clock
        self.cores = cores or usable_cores()
        self.probe = None if self.fixed else probe or LoadProbe()
        self._next = -math.inf
        if self.fixed:
            torch.set_num_threads(self.fixed)
        self.threads = self.fixed or torch.get_num_threads()
        self.changes = 0  # how often the count changed (for the metrics)

    def measure_now(self, seconds: float = 0.2) -> int:
        """Sample the load for `seconds` and set the threads (a run's start, `reverie eval`)."""
        if self.probe is not None:
            self.probe.others()
            time.sleep(seconds)
            self._next = -math.inf
        return self.update()

    def update(self) -> int:
        """Re-fit the thread count when `interval` seconds have passed; returns the count."""
        if self.fixed:
            return self.fixed
        now = self._clock()
        if now < self._next:
            return self.threads
        self._next = now + self.interval
        threads = threads_for(self.cores, self.probe.others())
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
            self.changes += 1
        self.threads = threads
        return threads
