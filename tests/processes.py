"""Stopping the servers the tests started: exactly the process (or process group) this suite made,
by its PID, never by name; politely first, then for sure."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path


def stop_process(
    process: subprocess.Popen, *, how: signal.Signals = signal.SIGTERM, group: bool = False, timeout: float = 30
) -> None:
    """Send `how` to the process (to its group when it was started with start_new_session, so that
    its children go too), wait `timeout` seconds, then SIGKILL and wait again. With `group`, the
    group is also waited for after its leader has gone: a child that outlived the leader (the
    Dagster daemon's code server did, now and then) is killed too, by the group's id."""
    if not group and process.poll() is not None:
        return

    def send(sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(process.pid, sig)
            else:
                process.send_signal(sig)

    send(how)
    deadline = time.monotonic() + timeout
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        process.wait(timeout=10)
    if group:
        while _group_alive(process.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _group_alive(process.pid):
            send(signal.SIGKILL)
            deadline = time.monotonic() + 10
            while _group_alive(process.pid) and time.monotonic() < deadline:
                time.sleep(0.05)


def _group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs (a zombie waiting for init to reap it does not:
    it holds nothing and cannot be killed)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[2]) == pgid and fields[0] != "Z":  # state, ppid, pgrp (proc(5))
            return True
    return False
