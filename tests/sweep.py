"""The kill sweeps' pace (tests/test_intake_crash.py, tests/test_beskeder_amqp.py): every point of a
sweep is a killed child on its own copy of the world, then the parent (or a second child) finishes
the work and checks it. The next point's killed child needs nothing from the current one, so it is
started before the current one is checked: it runs on the other core meanwhile. Every point is
still killed, finished and checked, one after the other, in order."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

# The one fork server of a pytest process, for every sweep's children: it has imported the pipeline
# and the modules whose functions the children run, but run nothing (so no thread pool is copied
# into a child: a module here must do no work at import), and a child starts in milliseconds. One
# list for all sweeps: the server starts with the list set when the first child is made, and a
# child whose function's module is not in it imports that module first (a quarter of a second).
FORKS = multiprocessing.get_context("forkserver")
FORKS.set_forkserver_preload(
    [
        "pipelines.definitions", "pipelines.runner", "pipelines.haendelser", "pipelines.intake", "tests.world",
        "tests.kill_haendelser", "tests.kill_intake", "tests.test_settlement_flow",
    ]
)  # fmt: skip

Point = TypeVar("Point")
Started = TypeVar("Started")
Outcome = TypeVar("Outcome")


def one_ahead(
    points: Iterable[Point], start: Callable[[Point], Started], wait: Callable[[Started], Outcome]
) -> Iterator[tuple[Point, Outcome]]:
    """(point, wait(start(point))) for each point in order, the next point already started when
    one is handed out. When the caller stops early (a run that completed ends a sweep), the one
    started ahead is waited for on close (use it in `with contextlib.closing(...)`), so that no
    child is left running on a world the caller then removes."""
    pending: tuple[Point, Started] | None = None
    remaining = iter(points)
    try:
        for point in remaining:
            pending = (point, start(point))
            break
        while pending is not None:
            point, started = pending
            pending = None
            for following in remaining:
                pending = (following, start(following))
                break
            yield point, wait(started)
    finally:
        if pending is not None:
            wait(pending[1])
