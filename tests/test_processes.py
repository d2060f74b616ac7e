"""The suite's one way of stopping what it started (tests/processes.py): nothing of a stopped group
is left running, not even a child that outlives its leader."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from tests.processes import _group_alive, stop_process


def test_a_child_that_ignores_sigterm_is_killed_with_its_group():
    # The leader goes on SIGTERM; its child ignores it and would outlive it (as the Dagster
    # daemon's code server did now and then).
    leader = subprocess.Popen(["bash", "-c", "(trap '' TERM; sleep 300) & wait"], start_new_session=True)
    time.sleep(0.3)
    assert _group_alive(leader.pid)
    started = time.monotonic()
    stop_process(leader, group=True, timeout=2)
    assert not _group_alive(leader.pid)
    assert time.monotonic() - started < 10


def test_a_group_whose_leader_has_gone_is_still_stopped():
    leader = subprocess.Popen(["bash", "-c", "sleep 300 & exit 0"], start_new_session=True)
    leader.wait(timeout=10)
    assert _group_alive(leader.pid)  # the orphaned sleep
    stop_process(leader, group=True, timeout=2)
    assert not _group_alive(leader.pid)


def test_a_single_process_is_stopped_at_once():
    process = subprocess.Popen(["sleep", "300"])
    # Once (a CI run of 2026-12-02) SIGTERM did not end this sleep within 5 s and it was killed:
    # what it inherited (blocked and ignored signals) and its state are kept for the message.
    inherited = _signal_state(process.pid)
    started = time.monotonic()
    stop_process(process, timeout=5)
    assert process.returncode is not None and time.monotonic() - started < 5, (process.returncode, inherited)


def _signal_state(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if line.split(":", 1)[0] in ("State", "SigBlk", "SigIgn"))
