"""Stopping the servers the tests started: exactly the process (or process group) this suite made,
by its PID, never by name; politely first, then for sure."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def stop_process(
    process: subprocess.Popen, *, how: signal.Signals = signal.SIGTERM, group: bool = False, timeout: float = 30
) -> None:
    """Send `how` to the process (to its group when it was started with start_new_session, so that
    its children go too), wait `timeout` seconds, then SIGKILL and wait again."""
    if process.poll() is not None:
        return

    def send(sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(process.pid, sig)
            else:
                process.send_signal(sig)

    send(how)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        process.wait(timeout=10)
