"""The pandera contract of the instructions (U01's value rules) as an asset check of intake."""

import datetime as dt

from tests.test_intake import ALICE, CARL, UFOEDT, check_evaluations, event_texts, new_world, opret, unmasked_cprs
from tests.world import request_file

RECEIVED = dt.datetime(2026, 10, 20, 9, 0, tzinfo=dt.timezone.utc)


def test_the_contract_check_counts_u01_failures_per_element_with_masked_examples(tmp_path):
    world = new_world(tmp_path)
    world.deliver(
        "SF6110_0101_a.xml",
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
    assert unmasked_cprs(event_texts(world)) == []


def test_the_contract_check_passes_on_clean_files_and_run_alone_judges_the_latest_intake(tmp_path):
    world = new_world(tmp_path)
    world.deliver("SF6110_0151_c.xml", request_file("0151", [opret("C-1", CARL)]), received=RECEIVED)
    assert world.intake().success

    [evaluation] = check_evaluations(world.intake(), "anmodninger_overholder_formatet")

    assert evaluation.passed
    assert evaluation.metadata["filer"].value == 1  # the second run had nothing: the latest files
