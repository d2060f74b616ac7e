"""The code location as operations.md "Dagster" describes it (issue 2, item 8): it loads from
workspace.yaml, the assets are grouped by integration, period assets are monthly `YYYY-MM`
partitions, checks of partitioned assets are partitioned too, the sensor ticks every 30 s, the
settlement job is partitioned, and the resources come from the PENSIONSTRAEK_* variables."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import dagster as dg
import pytest

from pipelines.config import ConfigError
from pipelines.definitions import build_definitions, defs, resources_from_env
from pipelines.exchange import ExchangeResource
from pipelines.partitions import periode_partitions
from pipelines.register import RegisterResource
from pipelines.resources import PartnersResource, StateResource

ROOT = Path(__file__).resolve().parent.parent

GROUPS = {
    "register": {"register/pensionssager", "register/pensionsberegning"},
    "sf6110": {"sf6110/modtagne_filer", "sf6110/traekanmodninger"},
    "settlement": {"settlement/aktive_anmodninger", "settlement/afregning"},
    "sf6111": {"sf6111/specifikationslister", "sf6111/afsendelse"},
    "sf2601": {"sf2601/udbetalinger", "sf2601/afsendelse"},
    "sf1411d": {"sf1411d/notifikationer"},
    "sf2610": {"sf2610/overgange", "sf2610/haendelser"},
    "sf1411": {"sf1411/opslagssnapshot"},
}
PERIOD_GROUPS = ("register", "settlement", "sf6111", "sf2601")
MESSAGE_GROUPS = ("sf1411d", "sf2610")  # per period too, in their own job `haendelser`


def validate(env: dict[str, str]) -> subprocess.Popen:
    """`dagster definitions validate` started with `env` (read it with `finished`)."""
    dagster = Path(sys.executable).parent / "dagster"
    command = [str(dagster)] if dagster.exists() else [sys.executable, "-m", "dagster"]
    return subprocess.Popen(
        [*command, "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def finished(process: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.fixture(scope="module")
def validated(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Both validations side by side (each loads the code location in its own process)."""
    started = {
        "good": validate(clean_env(tmp_path_factory.mktemp("good"))),
        "wrong": validate({**clean_env(tmp_path_factory.mktemp("wrong")), "PENSIONSTRAEK_KEEP_DELIVERIES": "maybe"}),
    }
    return {case: finished(process) for case, process in started.items()}


def clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PENSIONSTRAEK_")}
    (tmp_path / "dagster").mkdir(exist_ok=True)
    (tmp_path / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env["DAGSTER_HOME"] = str(tmp_path / "dagster")
    return env


def test_dagster_definitions_validate_passes_from_the_root(validated):
    result = validated["good"]
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pensionstraek" in result.stdout + result.stderr  # the code location workspace.yaml names


def test_dagster_definitions_validate_fails_on_a_wrong_value(validated):
    result = validated["wrong"]
    assert result.returncode != 0
    assert "PENSIONSTRAEK_KEEP_DELIVERIES" in result.stdout + result.stderr


def test_the_assets_are_grouped_by_integration():
    groups: dict[str, set[str]] = defaultdict(set)
    for spec in defs.resolve_all_asset_specs():
        groups[spec.group_name].add(spec.key.to_user_string())
    assert dict(groups) == GROUPS


def test_period_assets_are_partitioned_by_the_periods_of_the_register():
    """operations.md: the periods are those the register holds (dynamic partitions `periode`,
    kept by the register sensor and the command line; tests/test_periods.py)."""
    specs = {spec.key.to_user_string(): spec for spec in defs.resolve_all_asset_specs()}
    for group in (*PERIOD_GROUPS, *MESSAGE_GROUPS):
        for key in GROUPS[group]:
            partitions = specs[key].partitions_def
            assert isinstance(partitions, dg.DynamicPartitionsDefinition), key
            assert partitions == periode_partitions and partitions.name == "periode", key
    # The intake is not a period asset: files, not months.
    assert specs["sf6110/traekanmodninger"].partitions_def is None
    assert isinstance(specs["sf6110/modtagne_filer"].partitions_def, dg.DynamicPartitionsDefinition)
    assert specs["sf6110/modtagne_filer"].partitions_def.name != "periode"


def test_every_check_on_a_partitioned_asset_is_partitioned_the_same_way():
    graph = defs.resolve_asset_graph()
    checks = sorted(graph.asset_check_keys, key=str)
    assert len(checks) >= 10
    partitioned = 0
    for check in checks:
        asset_partitions = graph.get(check.asset_key).partitions_def
        check_partitions = graph.get_check_spec(check).partitions_def
        if asset_partitions is not None:
            partitioned += 1
            assert check_partitions == asset_partitions, check
    assert partitioned >= 8


def test_the_sensor_watches_in_every_30_seconds_and_launches_intake():
    sensor = defs.resolve_sensor_def("sf6110_indgang")
    assert sensor.minimum_interval_seconds == 30
    assert sensor.job_name == "sf6110_intake"
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    periods = defs.resolve_sensor_def("register_perioder")
    assert periods.minimum_interval_seconds == 30 and periods.default_status == dg.DefaultSensorStatus.RUNNING


def test_the_settlement_job_is_partitioned_by_period():
    job = defs.resolve_job_def("maanedlig_afregning")
    assert job.partitions_def == periode_partitions
    schedule = defs.resolve_schedule_def("maanedlig_afregning")
    assert schedule.job_name == "maanedlig_afregning"
    assert schedule.execution_timezone == "Europe/Copenhagen"
    selected = {key.to_user_string() for key in job.asset_layer.executable_asset_keys}
    assert selected == set().union(*(GROUPS[g] for g in PERIOD_GROUPS))


def test_the_haendelser_job_makes_the_messages_per_period():
    job = defs.resolve_job_def("haendelser")
    assert job.partitions_def == periode_partitions
    selected = {key.to_user_string() for key in job.asset_layer.executable_asset_keys}
    assert selected == set().union(*(GROUPS[g] for g in MESSAGE_GROUPS))


def test_build_definitions_takes_its_resources_from_the_environment(monkeypatch, tmp_path):
    partners = tmp_path / "partners.toml"
    partners.write_text("[[partner]]\naccount = 'kp'\nsf6110_for = '*'\n")
    monkeypatch.setenv("PENSIONSTRAEK_EXCHANGE_URL", "sftp://udk@sftp.example:2222/udk-pension")
    monkeypatch.setenv("PENSIONSTRAEK_SFTP_KEY", str(tmp_path / "id_ed25519"))
    monkeypatch.setenv("PENSIONSTRAEK_SFTP_KNOWN_HOSTS", str(tmp_path / "known_hosts"))
    monkeypatch.setenv("PENSIONSTRAEK_REGISTER_URL", str(tmp_path / "register"))
    monkeypatch.setenv("PENSIONSTRAEK_STATE_URL", str(tmp_path / "state"))
    monkeypatch.setenv("PENSIONSTRAEK_PARTNERS", str(partners))
    monkeypatch.setenv("PENSIONSTRAEK_KEEP_DELIVERIES", "true")

    resources = build_definitions().resources
    exchange, register, state, partners_resource = (resources[k] for k in ("exchange", "register", "state", "partners"))
    assert isinstance(exchange, ExchangeResource)
    assert (exchange.url, exchange.sftp_key, exchange.known_hosts) == (
        "sftp://udk@sftp.example:2222/udk-pension",
        str(tmp_path / "id_ed25519"),
        str(tmp_path / "known_hosts"),
    )
    assert isinstance(register, RegisterResource) and register.url == str(tmp_path / "register")
    assert isinstance(state, StateResource) and state.url == str(tmp_path / "state") and state.keep_deliveries is True
    assert isinstance(partners_resource, PartnersResource) and partners_resource.path == str(partners)
    assert partners_resource.partners().accounts == {"kp"}


def test_without_variables_the_resources_default_to_var(monkeypatch):
    for name in list(os.environ):
        if name.startswith("PENSIONSTRAEK_"):
            monkeypatch.delenv(name)
    resources = resources_from_env()
    assert resources["exchange"].url == "./var/exchange/udk-pension"
    assert resources["register"].url == "./var/register"
    assert resources["state"].url == "./var/state" and resources["state"].keep_deliveries is False
    assert resources["partners"].path == ""
    assert resources["partners"].partners().accounts == {"kp", "ky"}


def test_a_wrong_value_stops_building_the_definitions(monkeypatch):
    monkeypatch.setenv("PENSIONSTRAEK_KEEP_DELIVERIES", "maybe")
    with pytest.raises(ConfigError, match="PENSIONSTRAEK_KEEP_DELIVERIES"):
        build_definitions()


def test_the_commands_runs_carry_the_origin_the_webserver_reads_from_workspace_yaml():
    """The UI lists a job's runs by their code location (pipelines/runner.py makes the origin
    without parsing workspace.yaml, so it must stay what the webserver reads there)."""
    from dagster._core.workspace.load import location_origins_from_yaml_paths

    from pipelines.runner import job_origins

    [workspace_origin] = location_origins_from_yaml_paths([str(ROOT / "workspace.yaml")])
    remote, code = job_origins("maanedlig_afregning")
    assert remote.repository_origin.code_location_origin == workspace_origin
    assert remote.repository_origin.get_label() == "__repository__@pensionstraek"
    assert code.repository_origin.code_pointer.module == "pipelines.definitions"
