"""The one Definitions of the code location: every integration's own small Definitions, merged,
with the resources fed from the environment (operations.md "Configuration")."""

import dagster as dg

import assets.register
import assets.settlement
import assets.sf1411
import assets.sf2601
import assets.sf6110
import assets.sf6111
import assets.sf1411d
import assets.sf2610
from pipelines.exchange import ExchangeResource
from pipelines.jobs import haendelser_job, settlement_job
from pipelines.monitoring import monitored_in_process_executor
from pipelines.register import RegisterResource
from pipelines.resources import BeskedfordelerResource, PartnersResource, StateResource
from pipelines.schedules import maanedlig_afregning
from pipelines.sensors import haendelser_sensor, register_perioder, sf1411_register, sf6110_indgang


def resources_from_env() -> dict:
    return {
        "exchange": ExchangeResource.from_env(),
        "register": RegisterResource.from_env(),
        "state": StateResource.from_env(),
        "partners": PartnersResource.from_env(),
    }


def build_definitions(resources: dict | None = None) -> dg.Definitions:
    """The code location; tests pass their own resources (a temporary world)."""
    resources = dict(resources if resources is not None else resources_from_env())
    # The messages' settings are read from the environment when used (unset URL: outbox only).
    resources.setdefault("beskedfordeler", BeskedfordelerResource())
    return dg.Definitions.merge(
        assets.register.register_defs,
        assets.sf6110.sf6110_defs,
        assets.settlement.settlement_defs,
        assets.sf6111.sf6111_defs,
        assets.sf2601.sf2601_defs,
        assets.sf1411d.sf1411d_defs,
        assets.sf2610.sf2610_defs,
        assets.sf1411.sf1411_defs,
        dg.Definitions(
            jobs=[settlement_job, haendelser_job],
            schedules=[maanedlig_afregning],
            sensors=[sf6110_indgang, register_perioder, sf1411_register, haendelser_sensor],
            resources=resources,
            # One process per run, from the UI as from the command line: a period's steps are short,
            # and a process per step would cost the start of the code location (seconds) each. It
            # tags each run with that process, so a run whose process died is found
            # (pipelines/monitoring.py).
            executor=monitored_in_process_executor,
        ),
    )


defs = build_definitions()
