"""The SF1411 agreements file and the SF1411_D subscription lists."""

from __future__ import annotations

import json

import pytest

from contracts.codes import kommunekoder
from contracts.sf1411 import SOCIAL_PENSION_FELTER
from pipelines.agreements import (
    AGREEMENTS,
    DEMO_AGREEMENTS,
    STRUCTURA_AGREEMENT,
    dump_agreements,
    load_agreements,
    parse_agreements,
)
from pipelines.config import ConfigError
from pipelines.state import StateStore
from pipelines.subscriptions import (
    FJERN_KOMMUNE,
    FJERN_PNR,
    TILFOEJ_KOMMUNE,
    TILFOEJ_PNR,
    Vaerdiliste,
    apply_changes,
    opdater_vaerdiliste,
    vaerdiliste,
    vaerdilister,
)

AGREEMENT = "11111111-2222-3333-4444-555555555555"
SYSTEM = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"


def entry(**changes) -> dict:
    base = {
        "navn": "KP Aarhus",
        "user_system_uuid": SYSTEM,
        "services": ["SF1411_A", "SF1411_D"],
        "felter": ["Tillaegsprocent", "Sagsstatus"],
        "kommuner": ["0751"],
        "modtager": "kp-aarhus",
    }
    return {**base, **changes}


def test_the_demo_agreements_hold_and_keep_a_narrow_consumer_narrow():
    agreements = load_agreements("")
    assert set(agreements) == set(DEMO_AGREEMENTS)
    narrow = agreements[STRUCTURA_AGREEMENT]
    assert narrow.felter == ("Sagsstatus", "Pensionstype", "Tillaegsprocent")
    assert narrow.kommuner == frozenset({"0751"})
    kp = next(a for a in agreements.values() if a.modtager == "kp")
    assert kp.felter == SOCIAL_PENSION_FELTER and kp.kommuner == kommunekoder()


def test_felter_come_in_the_answers_order_whatever_the_file_says():
    agreement = parse_agreements({AGREEMENT: entry()})[AGREEMENT]
    assert agreement.felter == ("Sagsstatus", "Tillaegsprocent")
    assert agreement.allows("SF1411_A") and not agreement.allows("SF1411_B")


def test_yaml_and_json_files_load_and_a_dump_reads_back(tmp_path):
    yaml_file = tmp_path / "aftaler.yaml"
    yaml_file.write_text(
        f"{AGREEMENT}:\n  navn: KP Aarhus\n  user_system_uuid: {SYSTEM}\n  services: [SF1411_A]\n"
        "  felter: alle\n  kommuner: ['0751', '0101']\n"
    )
    loaded = load_agreements(str(yaml_file))
    assert loaded[AGREEMENT].kommuner == frozenset({"0751", "0101"})
    json_file = tmp_path / "aftaler.json"
    json_file.write_text(dump_agreements(loaded))
    assert load_agreements(str(json_file)) == loaded


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"not-a-uuid": entry()}, "is not a UUID"),
        ({AGREEMENT: entry(services=["SF9999"])}, "services must be"),
        ({AGREEMENT: entry(felter=["Sygeforsikring"])}, "Sygeforsikring"),
        ({AGREEMENT: entry(kommuner=[751])}, "list of kommunekoder"),
        ({AGREEMENT: entry(kommuner=["9999"])}, "unknown kommunekoder ['9999']"),
        ({AGREEMENT: entry(modtager=None)}, "needs a modtager"),
        ({AGREEMENT: entry(user_system_uuid="x")}, "user_system_uuid is not a UUID"),
        ({AGREEMENT: {**entry(), "ekstra": 1}}, "unknown keys ['ekstra']"),
        ([], "one non-empty mapping"),
    ],
)
def test_a_wrong_agreements_file_names_the_variable_and_the_fault(data, fragment):
    with pytest.raises(ConfigError) as raised:
        parse_agreements(data)
    assert AGREEMENTS in str(raised.value) and fragment in str(raised.value)


def test_an_unreadable_or_malformed_file_names_the_variable(tmp_path):
    with pytest.raises(ConfigError, match=AGREEMENTS):
        load_agreements(str(tmp_path / "missing.yaml"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("{: [")
    with pytest.raises(ConfigError, match="neither valid YAML nor JSON"):
        load_agreements(str(broken))


def test_changes_apply_in_order_and_repeats_change_nothing():
    liste = apply_changes(
        Vaerdiliste(),
        [(TILFOEJ_PNR, "0101001234"), (TILFOEJ_PNR, "0101001234"), (FJERN_PNR, "0202001234"),
         (TILFOEJ_KOMMUNE, "0751"), (FJERN_KOMMUNE, "0751"), (TILFOEJ_KOMMUNE, "0101")],
    )
    assert liste == Vaerdiliste(pnr=frozenset({"0101001234"}), kommuner=frozenset({"0101"}))


def test_lists_are_kept_in_the_state_store_per_agreement(tmp_path):
    state = StateStore(str(tmp_path / "state"))
    assert vaerdiliste(state, AGREEMENT) == Vaerdiliste()
    opdater_vaerdiliste(state, AGREEMENT, [(TILFOEJ_PNR, "0101001234"), (TILFOEJ_KOMMUNE, "0751")])
    after = opdater_vaerdiliste(state, AGREEMENT, [(FJERN_PNR, "0101001234")])
    assert after == Vaerdiliste(kommuner=frozenset({"0751"}))
    reread = StateStore(str(tmp_path / "state"))
    assert vaerdilister(reread) == {AGREEMENT: after}
    stored = json.loads((tmp_path / "state" / "sf1411" / "vaerdilister" / f"{AGREEMENT}.json").read_text())
    assert stored == {"pnr": [], "kommuner": ["0751"]}
