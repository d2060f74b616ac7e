"""The pandera contract of the instructions (U01's value rules) as an asset check of intake."""

import datetime as dt

import dagster as dg

from assets.sf6110 import (
    TRAEKANMODNINGER,
    anmodninger_overholder_formatet,
    modtagne_filer,
    traekanmodninger,
)
from tests.test_intake import (
    ALICE,
    CARL,
    UFOEDT,
    check_evaluations,
    event_texts,
    new_world,
    opret,
    unmasked_cprs,
)
from tests.world import request_file

RECEIVED = dt.datetime(2026, 10, 20, 9, 0, tzinfo=dt.timezone.utc)


def test_the_contract_check_counts_u01_failures_per_element_with_masked_examples(tmp_path):
    world = new_world(tmp_path)
    world.deliver(
        "SF6110_0101_20261020090000.xml",
        request_file(
            "0101",
            [
                opret("A-1", ALICE),
                opret("A-2", UFOEDT),  # born after the received date: CPR
                opret("A-3", ALICE, beloeb="1e3"),  # SamletBeloeb (and so Specifikation)
                opret("0101401234", ALICE, beloeb="12,50"),  # an id that looks like a CPR
            ],
        ),
        received=RECEIVED,
    )
    world.deliver("SF6110_0151_b.xml", request_file("0151", [opret("C-1", CARL)]), received=RECEIVED)

    outcome = world.intake()

    assert outcome.success, outcome.problems
    [evaluation] = check_evaluations(outcome, "anmodninger_overholder_formatet")
    metadata = {k: v.value for k, v in evaluation.metadata.items()}
    assert not evaluation.passed
    assert metadata["filer"] == 2 and metadata["anmodninger"] == 5
    assert metadata["fejl_CPR"] == 1
    assert metadata["fejl_SamletBeloeb"] == 2
    assert "fejl_AnmodningId" not in metadata
    assert "010140-****" in metadata["eksempler"]
    # The file name's digits are a timestamp, not a CPR: the operator must see which file it is.
    assert "SF6110_0101_20261020090000.xml nr. 2" in metadata["eksempler"]
    assert unmasked_cprs(event_texts(world)) == []


def test_an_intake_run_judges_its_own_files_and_the_check_run_alone_judges_the_latest(tmp_path):
    world = new_world(tmp_path)
    world.deliver("SF6110_0151_c.xml", request_file("0151", [opret("C-1", CARL, beloeb="1e3")]), received=RECEIVED)
    [first] = check_evaluations(world.intake(), "anmodninger_overholder_formatet")
    assert not first.passed and first.metadata["filer"].value == 1

    # The next intake run had nothing to judge: it must not report the previous run's files again.
    [empty] = check_evaluations(world.intake(), "anmodninger_overholder_formatet")
    assert empty.passed and empty.metadata["filer"].value == 0

    # Executed on its own (the UI's "Execute" on the check): the files of the latest intake.
    check_key = dg.AssetCheckKey(TRAEKANMODNINGER, "anmodninger_overholder_formatet")
    alone = dg.materialize(
        [traekanmodninger, modtagne_filer, anmodninger_overholder_formatet],
        selection=dg.AssetSelection.checks(check_key),
        resources=world.resources(),
        instance=world.instance,
    )
    [evaluation] = [
        e.event_specific_data for e in alone.all_events if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ]
    assert not evaluation.passed and evaluation.metadata["filer"].value == 1
