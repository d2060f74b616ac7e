"""The periods are those the register holds (operations.md "Dagster"): from the first pensionssager
snapshot to the newest, every month in between, kept by the sensor `register_perioder` and by the
command line before a run; the wall clock plays no part (issue 8, item 1)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from pipelines.generate import generate_register
from pipelines.partitions import PERIODE, missing_periods, register_periods, sync_periods
from pipelines.register import RegisterResource
from pipelines.sensors import register_perioder
from tests.world import World


def test_the_periods_run_from_the_first_snapshot_to_the_newest_gaps_included():
    assert register_periods([]) == []
    assert register_periods(["2027-02"]) == ["2027-02"]
    assert register_periods(["2026-11", "2027-02"]) == ["2026-11", "2026-12", "2027-01", "2027-02"]


def test_a_new_month_is_appended_and_a_late_older_one_puts_the_keys_back_in_month_order():
    assert missing_periods(["2026-11", "2026-12"], ["2026-11", "2026-12", "2027-01"]) == ([], ["2027-01"])
    assert missing_periods(["2026-11", "2026-12"], ["2026-11", "2026-12"]) == ([], [])
    # A period older than the first arrives: Dagster orders dynamic keys by when they were added.
    assert missing_periods(["2026-11", "2026-12"], ["2026-10", "2026-11", "2026-12"]) == (
        ["2026-11", "2026-12"],
        ["2026-10", "2026-11", "2026-12"],
    )


def test_sync_keeps_the_instance_in_month_order(tmp_path: Path):
    instance = dg.DagsterInstance.ephemeral()
    assert sync_periods(instance, ["2026-11", "2027-01"]) == ["2026-11", "2026-12", "2027-01"]
    assert sync_periods(instance, ["2026-11", "2027-01"]) == []
    assert sync_periods(instance, ["2026-09", "2027-01"]) == ["2026-09", "2026-10"]
    assert instance.get_dynamic_partitions(PERIODE) == ["2026-09", "2026-10", "2026-11", "2026-12", "2027-01"]


def test_the_register_sensor_adds_what_the_register_delivers_and_then_skips(tmp_path: Path):
    register = RegisterResource(url=str(tmp_path / "register"))
    generate_register(tmp_path / "register", ["2026-12", "2027-02"], persons=20, seed=1)
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, resources={"register": register})
        result = register_perioder(context)
        assert isinstance(result, dg.SensorResult)
        [request] = result.dynamic_partitions_requests
        assert (request.partitions_def_name, list(request.partition_keys)) == (PERIODE, ["2026-12", "2027-01", "2027-02"])
        instance.add_dynamic_partitions(PERIODE, list(request.partition_keys))  # what the daemon does
        skipped = register_perioder(dg.build_sensor_context(instance=instance, resources={"register": register}))
        assert isinstance(skipped, dg.SkipReason) and "2026-12 … 2027-02" in skipped.skip_message
        # A new snapshot is a new period at the next tick.
        generate_register(tmp_path / "register", ["2027-03"], persons=20, seed=2)
        again = register_perioder(dg.build_sensor_context(instance=instance, resources={"register": register}))
        assert list(again.dynamic_partitions_requests[0].partition_keys) == ["2027-03"]


def test_any_period_of_the_register_is_settled_whatever_the_date(tmp_path: Path):
    """`settle 2027-02` on a fresh instance: the command makes the register's periods first, and
    the instance has no period before the first snapshot (nothing reads 'missing')."""
    world = World(tmp_path, dg.DagsterInstance.ephemeral())
    generate_register(world.register_dir, ["2031-01", "2031-02"], persons=30, seed=3)
    outcome = world.settle("2031-02")
    assert outcome.success, outcome.problems
    assert world.instance.get_dynamic_partitions(PERIODE) == ["2031-01", "2031-02"]
    assert world.instance.get_materialized_partitions(dg.AssetKey(["settlement", "afregning"])) == {"2031-02"}
    with pytest.raises(ValueError, match="2031-03 er ikke en periode i registeret"):
        world.settle("2031-03")
