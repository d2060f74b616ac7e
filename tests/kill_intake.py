"""Intake or settlement in a child process for the kill sweep of tests/test_intake_crash.py, with
the kill hook of pipelines/storage.py at a chosen step of writing; and intake itself, as the sweep
runs it again. Its own module, without work at import: the fork server imports it (tests/sweep.py),
and a server that has run anything (a polars frame: its thread pool) hands its children locks
held by threads they do not have."""

from __future__ import annotations

import os
from pathlib import Path

from pipelines import storage
from pipelines.config import default_partners
from pipelines.exchange import LocalExchangeClient
from pipelines.intake import run_intake
from pipelines.register import RegisterResource
from pipelines.state import StateStore
from tests.world import World


def run_killed(work: str, root: str, step: int) -> None:
    """In the child: `work` (intake or settle) on the world at `root`, killed at `step`."""
    os.environ[storage.KILL_AFTER_WRITES] = str(step)
    if work == "intake":
        intake_once(World(Path(root), instance=None))
    else:
        from tests import test_settlement_flow as flow

        w = flow.new_world(Path(root))
        assert w.settle(flow.P).success


def intake_once(w: World) -> None:
    with LocalExchangeClient(str(w.exchange_root / "udk-pension")) as client:
        run_intake(client, StateStore(str(w.state_dir)), default_partners(), RegisterResource(url=str(w.register_dir)).newest_pensionssager)
