"""A period's SF6111 and SF2601 files made at once (issue 11), and the blocking checks on them:
the files of every municipality encoded in one pass are byte for byte those of the encoder per
municipality, and the checks, which no longer decode every file, still fail for a wrong file."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from assets.delivery import chosen_versions, make_period_files, made_files
from assets.sf2601 import _transfers_result, sf2601_files
from assets.sf6111 import _file_totals, _foreign_traek, sample, sf6111_files
from contracts.sf2601 import UDBETALING_SCHEMA, Sf2601Error, encode_sf2601, encode_sf2601_files
from contracts.sf6111 import TRAEK_SCHEMA, Sf6111Error, encode_sf6111, encode_sf6111_files
from pipelines.state import StateStore

P = "2027-03"
PAYDAY = dt.date(2027, 3, 31)
KOMMUNER = ["0101", "0147", "0751", "0851"]


def settled_rows(n: int = 40, escaped: bool = False) -> pl.DataFrame:
    rows = []
    for i in range(n):
        kk = KOMMUNER[i % len(KOMMUNER)]
        afvist = i % 7 == 3
        rows.append(
            {
                "periode": P,
                "kommunekode": kk,
                # ids out of order, some with characters XML must escape
                "anmodning_id": f"R<{(i * 37) % 101:03d}>&" if escaped and i % 5 == 0 else f"R-{(i * 37) % 101:03d}",
                "cpr": f"{1 + i % 28:02d}0{1 + i % 9}40{1000 + i:04d}",
                "traekart": "MAD",
                "anmodet_oere": 10_000 + i,
                "afregnet_oere": 0 if afvist else 10_000 + i,
                "status": "AFVIST" if afvist else "AFREGNET",
                "kode": "A03" if afvist else None,
                "tekst": "Pensionen rækker ikke" if afvist else None,
            }
        )
    return pl.DataFrame(rows, schema=TRAEK_SCHEMA)


def udbetaling_rows() -> pl.DataFrame:
    rows = [
        {
            "kommunekode": KOMMUNER[i % 3],
            "cpr": f"{1 + i:02d}0140{2000 + i:04d}",
            "pensionstype": "FP",
            "brutto_oere": 1_000_000,
            "skat_oere": 300_000,
            "netto_oere": 700_000,
            "traek_oere": 1_000 * i,
            "udbetalt_oere": 700_000 - 1_000 * i,
        }
        for i in range(12)
    ]
    return pl.DataFrame(rows, schema=UDBETALING_SCHEMA)


def test_all_files_at_once_equal_each_file_alone() -> None:
    settled = settled_rows(escaped=True).sample(fraction=1.0, shuffle=True, seed=3)
    at_once = encode_sf6111_files(P, PAYDAY, 1, settled)
    assert list(at_once) == sorted(KOMMUNER)
    for (kk,), rows in settled.group_by("kommunekode"):
        assert at_once[kk] == encode_sf6111(kk, P, PAYDAY, 1, rows)
    # Only 0101's rows have text to escape: the encoder escapes a column only where some row
    # needs it, so the other municipalities' files are made with escaping at once and without
    # it alone, and must not differ by a byte.
    mixed = settled_rows().with_columns(
        anmodning_id=pl.when(pl.col("kommunekode") == "0101").then(pl.col("anmodning_id") + "&<>").otherwise("anmodning_id"),
        tekst=pl.when(pl.col("kommunekode") == "0147").then(pl.col("tekst") + " <&>").otherwise("tekst"),
    )
    at_once = encode_sf6111_files(P, PAYDAY, 1, mixed)
    assert b"&amp;&lt;&gt;</AnmodningId>" in at_once["0101"] and b" &lt;&amp;&gt;</Tekst>" in at_once["0147"]
    for (kk,), rows in mixed.group_by("kommunekode"):
        assert at_once[kk] == encode_sf6111(kk, P, PAYDAY, 1, rows)
    rows = udbetaling_rows().reverse()
    at_once = encode_sf2601_files(P, PAYDAY, 1, rows)
    assert list(at_once) == sorted(set(rows["kommunekode"]))
    for (kk,), part in rows.group_by("kommunekode"):
        assert at_once[kk] == encode_sf2601(kk, P, PAYDAY, 1, part)


def test_all_files_at_once_refuse_what_one_file_refuses() -> None:
    settled = settled_rows()
    twice = pl.concat([settled, settled.head(1)])
    with pytest.raises(Sf6111Error, match="AnmodningId twice"):
        encode_sf6111_files(P, PAYDAY, 1, twice)
    # the same AnmodningId in two municipalities is two requests (their identity is the pair)
    other = settled.head(1).with_columns(kommunekode=pl.lit("0851"))
    assert len(encode_sf6111_files(P, PAYDAY, 1, pl.concat([settled.filter(pl.col("kommunekode") != "0851"), other]))) == 4
    with pytest.raises(Sf6111Error, match="another period"):
        encode_sf6111_files(P, PAYDAY, 1, settled.with_columns(periode=pl.lit("2027-04")))
    with pytest.raises(ValueError, match="kommunekode"):
        encode_sf6111_files(P, PAYDAY, 1, settled.with_columns(kommunekode=pl.lit("9999")))
    with pytest.raises(Sf2601Error, match="CPR twice"):
        encode_sf2601_files(P, PAYDAY, 1, pl.concat([udbetaling_rows(), udbetaling_rows().head(1)]))
    assert encode_sf6111_files(P, PAYDAY, 1, settled.clear()) == {}


class Log:
    def info(self, _message: str) -> None:
        pass


class Context:
    log = Log()


@pytest.fixture
def made(tmp_path: Path) -> StateStore:
    store = StateStore(str(tmp_path / "state"))
    store.write_frame(f"periods/{P}/afregning.parquet", settled_rows())
    make_period_files(Context(), store, "SF6111", [P], lambda p: sf6111_files(store, p))
    rows = udbetaling_rows()
    store.write_frame(f"periods/{P}/sf2601.parquet", rows)
    make_period_files(Context(), store, "SF2601", [P], lambda p: sf2601_files(rows, p))
    return store


def outgoing(store: StateStore, integration: str, kk: str) -> Path:
    return Path(store.path(f"outgoing/{integration}/{P}/{integration}_{kk}_{P.replace('-', '')}_001.xml"))


def not_sampled(store: StateStore) -> str:
    names = [f"SF6111_{kk}_{P.replace('-', '')}_001.xml" for kk in sorted(KOMMUNER)]
    kept = set(sample(names, P))
    return next(kk for kk, name in zip(sorted(KOMMUNER), names, strict=True) if name not in kept)


def test_the_checks_pass_on_the_files_made(made: StateStore) -> None:
    totals = _file_totals(made, P)
    assert totals.passed, totals.metadata["afvigelser"]
    assert totals.metadata["sum_filer_oere"].value == int(settled_rows()["afregnet_oere"].sum())
    assert totals.metadata["laest_helt"].value != "ingen"
    assert _foreign_traek(made, P).passed
    assert _transfers_result(made, P).passed


def test_a_changed_amount_in_a_file_not_read_in_full_fails_the_totals(made: StateStore) -> None:
    path = outgoing(made, "SF6111", not_sampled(made))
    data = path.read_bytes()
    changed = data.replace(b"<AfregnetBeloeb>1", b"<AfregnetBeloeb>2", 1)
    assert changed != data
    path.write_bytes(changed)
    result = _file_totals(made, P)
    assert not result.passed
    assert "SHA-256" in result.metadata["afvigelser"].value


def test_a_file_read_in_full_whose_header_lies_fails(made: StateStore) -> None:
    kk = sample([f"SF6111_{kk}_{P.replace('-', '')}_001.xml" for kk in sorted(KOMMUNER)], P)[0].split("_")[1]
    path = outgoing(made, "SF6111", kk)
    data = path.read_bytes()
    path.write_bytes(data.replace(b"<AntalTraek>", b"<AntalTraek>1", 1))
    result = _file_totals(made, P)
    assert not result.passed and "antal_traek" in result.metadata["afvigelser"].value


def test_a_foreign_traek_or_an_unreadable_file_fails_the_foreign_check(made: StateStore) -> None:
    victim, other = outgoing(made, "SF6111", "0101"), outgoing(made, "SF6111", "0147")
    stranger = other.read_bytes().split(b"  <Traek>\n", 2)[1]
    data = victim.read_bytes()
    victim.write_bytes(data.replace(b"  <Traek>\n", b"  <Traek>\n" + stranger + b"  <Traek>\n", 1))
    result = _foreign_traek(made, P)
    assert not result.passed and result.metadata["fremmede_traek"].value == 1
    assert "0101: 1" in result.metadata["filer_med_fremmede"].value
    victim.write_bytes(data.replace(b"    <CPR>", b"    <CPR >", 1))  # no longer the encoder's form
    result = _foreign_traek(made, P)
    assert not result.passed and "0101: kan ikke læses" in result.metadata["filer_med_fremmede"].value


def test_the_foreign_check_reads_escaped_keys_as_the_settlement_has_them(tmp_path: Path) -> None:
    # traek_keys undoes the escaping only in files with an `&`: here the keys must come back as
    # the settlement has them, or every escaped AnmodningId would be a foreign Traek.
    store = StateStore(str(tmp_path / "state"))
    store.write_frame(f"periods/{P}/afregning.parquet", settled_rows(escaped=True))
    make_period_files(Context(), store, "SF6111", [P], lambda p: sf6111_files(store, p))
    assert b"&amp;" in outgoing(store, "SF6111", "0101").read_bytes()
    result = _foreign_traek(store, P)
    assert result.passed and result.metadata["fremmede_traek"].value == 0


def test_a_wrong_sf2601_file_fails_its_check(made: StateStore) -> None:
    path = outgoing(made, "SF2601", "0147")
    data = path.read_bytes()
    path.write_bytes(data.replace(b"<UdbetaltBeloeb>6", b"<UdbetaltBeloeb>5", 1))
    result = _transfers_result(made, P)
    assert not result.passed and "0147: SamletUdbetaltBeloeb" in result.metadata["afvigelser"].value
    path.write_bytes(data.replace(b"<CPR>", b"<CPR>9", 1))
    assert not _transfers_result(made, P).passed


def test_the_trail_made_with_the_settlement_is_the_trail_made_after_it() -> None:
    from tests.test_benchmark import P as PEER_P, hard_cases

    from assets.settlement_rules import active_requests, settle, settle_with_trail, settlement_trail

    for seed in (1, 2):
        ledger, sager, beregning = hard_cases(seed)
        active = active_requests(ledger, PEER_P)
        settled, trail = settle_with_trail(active, sager, beregning, PEER_P)
        assert settled.equals(settle(active, sager, beregning, PEER_P))
        assert trail.equals(settlement_trail(active, settled, beregning, PEER_P))


def test_files_made_in_several_groups_are_the_files_made_in_one(tmp_path: Path, monkeypatch) -> None:
    import assets.delivery

    stores = {}
    for make_bytes in (assets.delivery.MAKE_BYTES, 1):  # one group; each file a group of its own
        monkeypatch.setattr(assets.delivery, "MAKE_BYTES", make_bytes)
        store = StateStore(str(tmp_path / f"state-{make_bytes}"))
        store.write_frame(f"periods/{P}/afregning.parquet", settled_rows())
        make_period_files(Context(), store, "SF6111", [P], lambda p: sf6111_files(store, p))
        stores[make_bytes] = store
    one, several = stores.values()
    assert [v.name for v in chosen_versions(one, "SF6111", P)] == [v.name for v in chosen_versions(several, "SF6111", P)]
    assert made_files(one, "SF6111", P) == made_files(several, "SF6111", P)
    for kk in KOMMUNER:
        assert outgoing(one, "SF6111", kk).read_bytes() == outgoing(several, "SF6111", kk).read_bytes()
