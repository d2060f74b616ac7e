"""The synthetic register: valid against its contracts, realistic, deterministic, fast."""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from pathlib import Path

import polars as pl
import pytest

from contracts.codes import kommunekoder
from contracts.cpr import valid_cpr_expr
from contracts.register import (
    PENSIONSBEREGNING_SCHEMA,
    PENSIONSSAGER_SCHEMA,
    check_pensionsberegning,
    check_pensionssager,
)
from pipelines.calendar import first_day, last_day
from pipelines.generate import generate_register, sample_cprs
from pipelines.register import RegisterResource

PERIODS = ["2027-01", "2027-02", "2027-03"]


@pytest.fixture(scope="module")
def register(tmp_path_factory) -> RegisterResource:
    folder = tmp_path_factory.mktemp("register")
    generate_register(folder, PERIODS, persons=20_000, seed=11)
    return RegisterResource(url=str(folder))


def test_every_period_keeps_both_contracts(register):
    assert register.periods("pensionssager") == PERIODS == register.periods("pensionsberegning")
    for periode in PERIODS:
        sager, beregning = register.read("pensionssager", periode), register.read("pensionsberegning", periode)
        assert check_pensionssager(sager, last_day(periode)).passed
        assert check_pensionsberegning(beregning, periode, sager).passed


def test_files_have_exactly_the_contract_dtypes(register):
    folder = Path(register.url)
    assert pl.read_parquet_schema(folder / "pensionssager" / "2027-01.parquet") == PENSIONSSAGER_SCHEMA
    assert pl.read_parquet_schema(folder / "pensionsberegning" / "2027-01.parquet") == PENSIONSBEREGNING_SCHEMA


def test_a_realistic_mix(register):
    sager = register.read("pensionssager", "2027-02")
    n = sager.height
    share = lambda condition: sager.filter(condition).height / n  # noqa: E731
    assert n == 20_000
    assert share(pl.col("pensionstype") == "FP") > 0.75
    assert all(share(pl.col("pensionstype") == t) > 0.01 for t in ("FTP", "SEP", "TIP"))
    assert 0.006 < share(pl.col("sagsstatus") == "STANDSET") < 0.015
    assert 0.002 < share(pl.col("sagsstatus") == "OPHOERT") < 0.012
    administered = sager.filter("under_administration")
    assert 10 <= administered.height <= 120  # a few thousand per 1.35 million
    assert administered["administrationskommune"].null_count() == 0
    assert sager.filter(~pl.col("under_administration"))["administrationskommune"].null_count() == n - administered.height
    assert sager.filter(pl.col("udbetaling_til_kommune") & ~pl.col("under_administration")).is_empty()
    assert administered["udbetaling_til_kommune"].sum() > administered.height / 2
    assert sager["doedsdato"].null_count() < n
    assert sager["bopaelskommune"].n_unique() == len(kommunekoder())
    birth_year = sager["cpr"].str.slice(4, 2).cast(pl.Int32) + 1900
    assert birth_year.min() >= 1930 and birth_year.max() <= 1965
    assert sager["cpr"].is_unique().all()
    partners = sager.filter("samlevende")["samlever_cpr"]
    assert partners.null_count() == 0 and sager.filter(~pl.col("samlevende"))["samlever_cpr"].null_count() == n - len(partners)


def test_amounts(register):
    beregning = register.read("pensionsberegning", "2027-02").join(
        register.read("pensionssager", "2027-02"), on="cpr"
    )
    paid = beregning.filter("udbetales")
    assert paid["brutto_oere"].min() >= 800_000 and paid["brutto_oere"].max() <= 2_500_000
    rate = paid["skat_oere"] / paid["brutto_oere"]
    assert rate.min() >= 0.199 and rate.max() <= 0.40
    assert (paid["sagsstatus"] == "AKTIV").all()
    standset = beregning.filter(pl.col("sagsstatus") == "STANDSET")
    assert standset.height > 0 and not standset["udbetales"].any() and standset["netto_oere"].sum() == 0
    assert beregning.filter(pl.col("sagsstatus") == "OPHOERT").is_empty()


def test_deaths_follow_the_period(register):
    january, march = register.read("pensionssager", "2027-01"), register.read("pensionssager", "2027-03")
    # Known in March but not yet in January: those who die in February or March.
    later = march.filter(pl.col("doedsdato") >= first_day("2027-02"))
    assert later.height > 0
    assert january.filter(pl.col("cpr").is_in(later["cpr"].implode()))["doedsdato"].null_count() == later.height
    # Dead before March: OPHOERT in March and no calculation; died in March: paid for March.
    before = march.filter(pl.col("doedsdato") < first_day("2027-03"))
    assert before.height > 0 and (before["sagsstatus"] == "OPHOERT").all()
    calculated = register.read("pensionsberegning", "2027-03")["cpr"]
    assert not before["cpr"].is_in(calculated.implode()).any()
    in_march = march.filter(pl.col("doedsdato") >= first_day("2027-03"), pl.col("sagsstatus") == "AKTIV")
    assert in_march.height > 0 and in_march["cpr"].is_in(calculated.implode()).all()


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*.parquet"))}


def test_deterministic_for_a_seed(tmp_path):
    generate_register(tmp_path / "a", ["2027-02"], persons=3_000, seed=7)
    generate_register(tmp_path / "b", ["2027-02"], persons=3_000, seed=7)
    generate_register(tmp_path / "c", ["2027-02"], persons=3_000, seed=8)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert len(digest(tmp_path / "a")) == 2
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


def test_scale_smoke(tmp_path):
    started = time.perf_counter()
    generate_register(tmp_path, ["2027-02"], persons=50_000, seed=0)
    took = time.perf_counter() - started
    register = RegisterResource(url=str(tmp_path))
    sager, beregning = register.read("pensionssager", "2027-02"), register.read("pensionsberegning", "2027-02")
    assert sager.height == 50_000 and beregning.height > 49_000
    assert check_pensionssager(sager, dt.date(2027, 2, 28)).passed
    assert check_pensionsberegning(beregning, "2027-02", sager).passed
    assert took < 10  # about 0.1 s here; 1.5 million rows take about 2 s


def test_sample_cprs():
    cprs = sample_cprs(100_000, seed=3, born_from=dt.date(1950, 1, 1), born_to=dt.date(1950, 12, 31))
    assert cprs.len() == 100_000 and cprs.is_unique().all()
    assert pl.select(valid_cpr_expr(pl.lit(cprs), dt.date(1950, 12, 31)).all()).item()
    assert (cprs.str.slice(4, 2) == "50").all()
    assert sample_cprs(10, seed=3).to_list() == sample_cprs(10, seed=3).to_list()
    with pytest.raises(ValueError, match="distinct"):
        sample_cprs(366 * 4000, born_from=dt.date(1950, 1, 1), born_to=dt.date(1950, 12, 31))
    with pytest.raises(ValueError, match="1900s"):
        sample_cprs(1, born_from=dt.date(2001, 1, 1), born_to=dt.date(2001, 12, 31))


def test_bad_periods(tmp_path):
    with pytest.raises(ValueError, match="periode"):
        generate_register(tmp_path, ["2027-2"], persons=10)
    with pytest.raises(ValueError, match="at least one"):
        generate_register(tmp_path, [], persons=10)
