"""The Dagster UI of a small settled world, and a real Chromium to look at it (operations.md
"Dagster": the UI is part of the product, tested in a real browser).

`running_ui()` makes a world in a temporary folder (register, partner accounts, SF6110 files
delivered through the emulator, intake, a settlement over two periods in one run, and a period
whose register breaks its contract), then starts `dagster dev` from the checkout on that world's
DAGSTER_HOME and PENSIONSTRAEK_* variables, on a free loopback port, so that the webserver and
the daemon (which launches the backfills) run the code location as an operator's would. It stops
exactly the process group it started. `chromium()` launches Debian's Chromium through Playwright
(Playwright's own browser download is not reachable here). Both fail under CI=true and skip
otherwise when their part is missing."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
from tests.processes import stop_process

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
HOST = "127.0.0.1"
JOB = "maanedlig_afregning"

# The world: two good periods settled in one range run, and a third whose pensionssager breaks
# its contract (a duplicate CPR), so that its blocking check fails.
GOOD = ("2026-09", "2026-10")
BROKEN = "2026-11"
LATER = ("2026-12", "2027-01")  # registered, not settled: the UI's backfill settles these


def _missing(what: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"browser tests: {what}", pytrace=False)
    pytest.skip(f"browser tests: {what}")


@dataclass
class SettledWorld:
    root: Path
    env: dict[str, str]
    figures: dict[str, dict[str, int]]  # per good period, settlement/afregning's own figures
    run_ids: list[str]  # the settlement runs the command made


def make_world(root: Path) -> SettledWorld:
    """A small world through the real code: files in, intake, `settle 2026-09 --to 2026-10`,
    and a failed `settle 2026-11`."""
    from pipelines.calendar import TZ
    from pipelines.generate import generate_register
    from pipelines.generate_sf6110 import generate_request_files
    from pipelines.runner import instance as command_instance
    from tests.world import World

    home = root / "dagster"
    home.mkdir(parents=True)
    env = {
        "DAGSTER_HOME": str(home),
        "PENSIONSTRAEK_EXCHANGE_URL": str(root / "exchange" / "udk-pension"),
        "PENSIONSTRAEK_REGISTER_URL": str(root / "register"),
        "PENSIONSTRAEK_STATE_URL": str(root / "state"),
    }
    with _environ(env):
        instance = command_instance()  # the persistent instance the UI reads (telemetry off)
        world = World(root, instance)
        generate_register(world.register_dir, [*GOOD, BROKEN, *LATER], persons=120, seed=4)
        sager = pl.read_parquet(world.register_dir / "pensionssager" / f"{GOOD[0]}.parquet")
        for i, periode in enumerate(GOOD):
            received = dt.datetime(int(periode[:4]), int(periode[5:]), 2, 10, 0, tzinfo=TZ)
            files = generate_request_files(
                sager, instructions=12 + 10 * i, fra_periode=periode, seed=i + 1, kommuner=["0101", "0751"], dannet=received
            )
            for name, data in sorted(files.items()):
                world.deliver(name, data, received=received)
        assert world.intake().success
        settled = world.settle(*GOOD)
        assert settled.success, settled.problems
        broken = world.register_dir / "pensionssager" / f"{BROKEN}.parquet"
        frame = pl.read_parquet(broken)
        pl.concat([frame, frame.head(1)]).write_parquet(broken)  # a duplicate CPR: a contract breach
        failed = world.settle(BROKEN)
        assert not failed.success
        figures = {p: settled.metadata("settlement/afregning", p) for p in GOOD}
        _stop_sensors(instance, ("sf1411_register", "haendelser_sensor"))
        instance.dispose()
    return SettledWorld(root=root, env=env, figures=figures, run_ids=[settled.run_id, failed.run_id])


def _stop_sensors(instance, names: tuple[str, ...]) -> None:
    """Stopped before the UI starts: their runs (the SF1411 snapshot and the messages of every
    period, each judging the register's contracts again) would make a later period's passing
    contract check the latest one shown, and the tests read this world as it was left."""
    from dagster._core.definitions.repository_definition import SINGLETON_REPOSITORY_NAME
    from dagster._core.remote_origin import RemoteInstigatorOrigin, RemoteRepositoryOrigin
    from dagster._core.scheduler.instigation import InstigatorState, InstigatorStatus, InstigatorType

    from pipelines.runner import _location_origin

    repository = RemoteRepositoryOrigin(_location_origin(), SINGLETON_REPOSITORY_NAME)
    for name in names:
        instance.add_instigator_state(
            InstigatorState(RemoteInstigatorOrigin(repository, name), InstigatorType.SENSOR, InstigatorStatus.STOPPED)
        )


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class UI:
    url: str
    world: SettledWorld
    process: subprocess.Popen
    log: Path

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        request = urllib.request.Request(
            f"{self.url}/graphql",
            data=json.dumps({"query": query, "variables": variables or {}}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.load(response)
        assert "errors" not in answer, answer
        return answer["data"]


@contextlib.contextmanager
def running_ui(root: Path) -> Iterator[UI]:
    dagster = Path(sys.executable).parent / "dagster"
    if not dagster.exists():
        _missing(f"{dagster} is not installed")
    world = make_world(root)
    port = _free_port()
    log = root / "dagster-dev.log"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PENSIONSTRAEK_")},
        **world.env,
        "PENSIONSTRAEK_SENSOR_INTERVAL": "5",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(dagster), "dev", "-w", "workspace.yaml", "-h", HOST, "-p", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: the webserver, the daemon, the code servers
        )
    ui = UI(url=f"http://{HOST}:{port}", world=world, process=process, log=log)
    try:
        _wait_until_up(ui)
        yield ui
    finally:
        _stop(process)


def _wait_until_up(ui: UI, timeout: float = 150) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ui.process.poll() is not None:
            raise RuntimeError(f"dagster dev ended ({ui.process.returncode}): {ui.log.read_text()[-2000:]}")
        try:
            data = ui.graphql("{ workspaceOrError { ... on Workspace { locationEntries { name locationOrLoadError { __typename } } } } }")
            entries = data["workspaceOrError"]["locationEntries"]
            if entries and all(e["locationOrLoadError"] and e["locationOrLoadError"]["__typename"] == "RepositoryLocation" for e in entries):
                return
        except (OSError, AssertionError, KeyError, TypeError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"dagster dev did not come up in {timeout} s: {ui.log.read_text()[-2000:]}")


def _stop(process: subprocess.Popen) -> None:
    # Only the process group this module started (start_new_session: its id is the PID).
    stop_process(process, group=True)


@contextlib.contextmanager
def chromium() -> Iterator[object]:
    """One Chromium for the session (Debian's; we run as root, hence --no-sandbox)."""
    if not CHROMIUM.exists():
        _missing(f"{CHROMIUM} is missing (Debian package chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


if __name__ == "__main__":  # a look by hand: python -m tests.browser DIR
    target = Path(sys.argv[1])
    with running_ui(target) as ui:
        print(ui.url, flush=True)
        print(json.dumps(ui.world.figures, default=str))
        while True:
            time.sleep(3600)

