"""The one Definitions of the code location: every integration's own small Definitions, merged,
with the resources fed from the environment (operations.md "Configuration")."""

import dagster as dg

import assets.register
import assets.settlement
import assets.sf2601
import assets.sf6110
import assets.sf6111
from pipelines.exchange import ExchangeResource
from pipelines.jobs import settlement_job
from pipelines.register import RegisterResource
from pipelines.resources import PartnersResource, StateResource
from pipelines.schedules import maanedlig_afregning
from pipelines.sensors import register_perioder, sf6110_indgang


def resources_from_env() -> dict:
    return {
        "exchange": ExchangeResource.from_env(),
        "register": RegisterResource.from_env(),
        "state": StateResource.from_env(),
        "partners": PartnersResource.from_env(),
    }


def build_definitions(resources: dict | None = None) -> dg.Definitions:
    """The code location; tests pass their own resources (a temporary world)."""
    return dg.Definitions.merge(
        assets.register.register_defs,
        assets.sf6110.sf6110_defs,
        assets.settlement.settlement_defs,
        assets.sf6111.sf6111_defs,
        assets.sf2601.sf2601_defs,
        dg.Definitions(
            jobs=[settlement_job],
            schedules=[maanedlig_afregning],
            sensors=[sf6110_indgang, register_perioder],
            resources=resources if resources is not None else resources_from_env(),
            # One process per run, from the UI as from the command line: a period's steps are short,
            # and a process per step would cost the start of the code location (seconds) each.
            executor=dg.in_process_executor,
        ),
    )


defs = build_definitions()
