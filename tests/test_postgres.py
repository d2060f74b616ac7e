"""The Dagster instance on PostgreSQL, as in production (issue 8 item 8; docs/operations.md "The
Dagster instance in production"): DAGSTER_HOME holds deploy/dagster.yaml, the DAGSTER_PG_*
variables point at a real PostgreSQL the suite started (tests/postgres.py), and intake and a
settlement run through the `pensionstraek` commands as an operator runs them. Their runs and
materializations are then read back through the instance and straight from PostgreSQL."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from pipelines.calendar import TZ, first_open_period, previous_periode
from pipelines.generate import generate_register
from pipelines.generate_sf6110 import generate_request_files
from pipelines.monitoring import KOERSEL_TAG
from tests.test_cli import pensionstraek
from tests.world import World

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION_YAML = ROOT / "deploy" / "dagster.yaml"

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def production(postgres_server, tmp_path_factory) -> tuple[World, dict[str, str], str]:
    root = tmp_path_factory.mktemp("production")
    world = World(root, instance=None)
    periode = first_open_period(dt.datetime.now(TZ))
    generate_register(world.register_dir, [previous_periode(periode), periode], persons=200, seed=7)
    sager = pl.read_parquet(world.register_dir / "pensionssager" / f"{periode}.parquet")
    for name, data in generate_request_files(sager, instructions=12, fra_periode=periode, seed=2, kommuner=["0101", "0751"]).items():
        world.send(name, data)
    world.route()
    home = root / "dagster"
    home.mkdir()
    shutil.copy(PRODUCTION_YAML, home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PENSIONSTRAEK_", "DAGSTER_PG_"))}
    env.update(
        postgres_server.new_database("produktion"),
        DAGSTER_HOME=str(home),
        PENSIONSTRAEK_EXCHANGE_URL=str(world.exchange_root / "udk-pension"),
        PENSIONSTRAEK_REGISTER_URL=str(world.register_dir),
        PENSIONSTRAEK_STATE_URL=str(world.state_dir),
    )
    return world, env, periode


def command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([*pensionstraek(), *args], env=env, cwd=env["DAGSTER_HOME"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def ran(production):
    world, env, periode = production
    return command(env, "intake"), command(env, "settle", periode)


@pytest.fixture
def instance(production, monkeypatch):
    _, env, _ = production
    for name, value in env.items():
        if name.startswith("DAGSTER_PG_"):
            monkeypatch.setenv(name, value)
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as opened:
        yield opened


def test_the_production_instance_is_postgres_with_monitoring_retries_and_one_run_of_a_kind(production, ran, instance):
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    _, env, _ = production
    assert (Path(env["DAGSTER_HOME"]) / "dagster.yaml").read_text() == PRODUCTION_YAML.read_text()  # the command kept it
    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
    assert instance.run_monitoring_enabled and instance.run_monitoring_start_timeout_seconds == 180
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
    assert not instance.run_retries_retry_on_asset_or_op_failure  # a died run, never a failed step
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
    assert {(l["key"], l["value"], l["limit"]) for l in limits} == {(KOERSEL_TAG, "intake", 1), (KOERSEL_TAG, "afregning", 1)}
    assert not instance.telemetry_enabled


def test_intake_and_settlement_runs_and_materializations_are_in_postgres(production, ran, instance, postgres_server):
    world, env, periode = production
    taken_in, settled = ran
    assert "1 modtaget, 0 afvist" in taken_in.stdout
    assert int(re.search(r"SF6111 sendt: (\d+)", settled.stdout).group(1)) >= 1, settled.stdout

    runs = {r.job_name: r for r in instance.get_runs()}
    assert set(runs) == {"sf6110_intake", "maanedlig_afregning"}
    assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs.values())
    # The jobs carry the tag the production concurrency limits are on.
    assert runs["sf6110_intake"].tags[KOERSEL_TAG] == "intake"
    assert runs["maanedlig_afregning"].tags[KOERSEL_TAG] == "afregning"
    ledger = instance.get_latest_materialization_event(dg.AssetKey(["sf6110", "traekanmodninger"]))
    assert ledger is not None and ledger.run_id == runs["sf6110_intake"].run_id
    sent = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(["sf6111", "afsendelse"]), asset_partitions=[periode]), limit=5
    ).records
    assert [r.run_id for r in sent] == [runs["maanedlig_afregning"].run_id]

    # The same, straight from the database: nothing of it lives in files under DAGSTER_HOME.
    connection = postgres_server.connect(env["DAGSTER_PG_DB"])
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pipeline_name, status FROM runs ORDER BY pipeline_name")
            assert cursor.fetchall() == [("maanedlig_afregning", "SUCCESS"), ("sf6110_intake", "SUCCESS")]
            cursor.execute(
                "SELECT asset_key, partition FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' AND run_id = %s",
                (runs["maanedlig_afregning"].run_id,),
            )
            materialized = cursor.fetchall()
    finally:
        connection.close()
    assert ('["sf6111", "afsendelse"]', periode) in materialized
    assert ('["settlement", "afregning"]', periode) in materialized
    assert not list(Path(env["DAGSTER_HOME"]).glob("**/*.db"))  # no SQLite beside it
