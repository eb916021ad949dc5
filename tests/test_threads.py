"""The thread count fitted to the free cores (reverie/run/threads.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from reverie.run import threads as T


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # the tests' fake machine has 2 cores; start each test from 2 threads
    yield
    torch.set_num_threads(before)


class FakeProbe:
    def __init__(self, loads):
        self.loads = list(loads)

    def others(self):
        return self.loads.pop(0)


@pytest.mark.parametrize("cores, others, expected", [
    (2, 0.0, 2), (2, 0.25, 2), (2, 0.35, 1), (2, 1.0, 1), (2, 1.4, 1), (2, 3.0, 1),
    (8, 1.0, 7), (8, 2.6, 5), (4, None, 4)])
def test_threads_leave_the_cores_others_use(cores, others, expected):
    assert T.threads_for(cores, others) == expected


def test_the_governor_refits_when_the_load_changes_and_only_every_interval():
    now = [0.0]
    governor = T.ThreadGovernor(0, interval=5.0, clock=lambda: now[0], probe=FakeProbe([1.0, 0.0, 0.1]), cores=2)
    assert governor.update() == 1 and torch.get_num_threads() == 1  # a neighbour holds a core
    now[0] = 4.9
    assert governor.update() == 1  # not re-measured before the interval
    now[0] = 5.0
    assert governor.update() == 2 and torch.get_num_threads() == 2  # the neighbour stopped
    now[0] = 10.0
    assert governor.update() == 2 and governor.changes == 2


def test_a_fixed_thread_count_is_kept():
    governor = T.ThreadGovernor(1, probe=FakeProbe([]), cores=2)
    assert governor.probe is None and governor.update() == 1 and torch.get_num_threads() == 1


def test_cgroup_quota_caps_the_usable_cores(tmp_path, monkeypatch):
    cpu_max = tmp_path / "cpu.max"
    monkeypatch.setattr(T, "CGROUP_V2", cpu_max)
    cpu_max.write_text("150000 100000\n")
    assert T.cgroup_cpu_quota() == 1.5
    assert T.usable_cores() == min(len(os.sched_getaffinity(0)), 2)
    cpu_max.write_text("max 100000\n")
    assert T.cgroup_cpu_quota() is None and T.usable_cores() == len(os.sched_getaffinity(0))


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs Linux /proc/stat")
def test_the_load_probe_sees_a_busy_process_and_not_its_own_work():
    probe = T.LoadProbe()
    probe.others()
    end = time.monotonic() + 0.6
    x = 0
    while time.monotonic() < end:  # our own work: not "others"
        x += 1
    own_only = probe.others()
    if own_only is not None and own_only > len(os.sched_getaffinity(0)) - 1:
        pytest.skip(f"other processes already keep {own_only:.1f} cores busy: no room to see one more")
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        probe.others()
        time.sleep(1.0)
        with_hog = probe.others()
    finally:
        hog.kill()
        hog.wait()
    assert own_only is not None and with_hog is not None
    assert with_hog > own_only + 0.5, (own_only, with_hog)  # about one core more
