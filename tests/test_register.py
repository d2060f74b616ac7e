"""The register: contracts (register.md), the reader, and the Dagster assets with their checks."""

from __future__ import annotations

import datetime as dt
import io
import re
from decimal import Decimal
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assets.register import (
    pensionsberegning,
    pensionsberegning_kontrakt,
    pensionssager,
    pensionssager_kontrakt,
    register_defs,
)
from contracts.cpr import is_valid_cpr, valid_cpr_expr
from contracts.register import (
    PENSIONSBEREGNING_SCHEMA,
    PENSIONSSAGER_SCHEMA,
    check_pensionsberegning,
    check_pensionssager,
)
from pipelines.config import REGISTER_URL, ConfigError
from pipelines.generate import generate_register
from pipelines.register import RegisterError, RegisterResource
from pipelines.resources import StateResource
from pipelines.state import StateStore
from tests.registers import case_row

JUDGED_ON = dt.date(2027, 2, 28)
PERIODE = "2027-02"
FULL_CPR = re.compile(r"[0-9]{10}")


def sag(cpr: str = "0101401234", **overrides) -> dict:
    defaults = {"bevillingskommune": "0101", "formue_oere": 12_345_600, "tilkendelsesdato": dt.date(2007, 1, 1)}
    return case_row(cpr, **(defaults | overrides))


def sager(*rows: dict) -> pl.DataFrame:
    rows = rows or (sag(), sag("0202502345"), sag("1512453456", pensionstype="FTP"))
    return pl.DataFrame(list(rows), schema=PENSIONSSAGER_SCHEMA)


def beregning(cpr: str = "0101401234", brutto: int = 1_500_000, skat: int = 450_000, **overrides) -> dict:
    row = {"cpr": cpr, "periode": PERIODE, "brutto_oere": brutto, "skat_oere": skat, "netto_oere": brutto - skat}
    return row | {"udbetales": True} | overrides


def beregninger(*rows: dict) -> pl.DataFrame:
    rows = rows or (beregning(), beregning("0202502345"))
    return pl.DataFrame(list(rows), schema=PENSIONSBEREGNING_SCHEMA)


def assert_masked(texts) -> None:
    for text in texts:
        assert not FULL_CPR.search(text), text


# --- CPR validity as a polars expression ----------------------------------------------------


def agree(values: list[str | None], judged_on: dt.date) -> None:
    frame = pl.DataFrame({"cpr": values}, schema={"cpr": pl.String})
    vectorized = frame.select(valid_cpr_expr("cpr", judged_on))["cpr"].to_list()
    assert vectorized == [is_valid_cpr(v, judged_on) for v in values]


def test_valid_cpr_expr_agrees_with_is_valid_cpr_on_every_date_shape():
    # every DD 00–32 × MM 00–13 × the century edges of YY × every digit 7
    values = [
        f"{dd:02d}{mm:02d}{yy:02d}{digit7}123"
        for dd in range(33)
        for mm in range(14)
        for yy in (0, 24, 26, 27, 36, 37, 57, 58, 99)
        for digit7 in range(10)
    ]
    for judged_on in (dt.date(2026, 12, 31), dt.date(2027, 2, 28), dt.date(2058, 1, 1)):
        agree(values, judged_on)


cpr_like = st.one_of(
    st.from_regex(r"\A[0-9]{10}\Z"),
    st.from_regex(r"\A(0[1-9]|[12][0-9]|3[01])(0[1-9]|1[0-2])[0-9]{2}[0-9]{4}\Z"),
    st.text(max_size=12),
    st.text(alphabet="0123456789 -x٣", max_size=11),
    st.none(),
)


@given(st.lists(cpr_like, max_size=50), st.dates(min_value=dt.date(1990, 1, 1), max_value=dt.date(2060, 12, 31)))
@settings(max_examples=200, deadline=None)
def test_valid_cpr_expr_agrees_with_is_valid_cpr(values, judged_on):
    agree(values, judged_on)


def test_valid_cpr_expr_takes_a_date_column():
    frame = pl.DataFrame({"cpr": ["0103274234", "0103274234"], "on": [dt.date(2027, 2, 28), dt.date(2027, 3, 1)]})
    assert frame.select(valid_cpr_expr("cpr", pl.col("on")))["cpr"].to_list() == [False, True]


# --- the pensionssager contract -------------------------------------------------------------


def test_good_pensionssager_passes():
    result = check_pensionssager(sager(), JUDGED_ON)
    assert result.passed and result.failure_count == 0 and result.failures_by_check == {} and not result.examples


@pytest.mark.parametrize(
    ("column", "bad", "narrowly_good", "rule"),
    [
        ("cpr", "2902410234", "2902400234", "cpr: valid_cpr"),  # 1941 is no leap year, 1940 is
        ("cpr", "0103274234", "2802274234", "cpr: valid_cpr"),  # born after / on the judging day
        ("cpr", "010140123", "0101401235", "cpr: valid_cpr"),
        ("cpr", None, "0101401235", "cpr: not_nullable"),
        ("pensionstype", "fp", "TIP", "pensionstype: known_pensionstype"),
        ("sagsstatus", "OPHØRT", "OPHOERT", "sagsstatus: known_sagsstatus"),
        ("sagsstatus", "AKTIV ", "STANDSET", "sagsstatus: known_sagsstatus"),
        ("bopaelskommune", "101", "0101", "bopaelskommune: known_kommunekode"),
        ("bopaelskommune", None, "0860", "bopaelskommune: not_nullable"),
        ("bevillingskommune", "0000", None, "bevillingskommune: known_kommunekode"),
        ("administrationskommune", " 0101", "0851", "administrationskommune: known_kommunekode"),
        ("forud_bagud", "forud", "FORUD", "forud_bagud: known_forud_bagud"),
        ("tillaegsprocent", Decimal("100.01"), Decimal("100.00"), "tillaegsprocent: percent_0_100"),
        ("tillaegsprocent", Decimal("-0.01"), Decimal("0.00"), "tillaegsprocent: percent_0_100"),
        ("tillaegsprocent", None, Decimal("0.01"), "tillaegsprocent: not_nullable"),
        ("helbredsprocent", Decimal("100.01"), None, "helbredsprocent: percent_0_100"),
        ("samlever_cpr", "3102401234", None, "samlever_cpr: valid_cpr"),
        ("samlever_cpr", "31024O1234", "3101401234", "samlever_cpr: valid_cpr"),
        ("pensionsbroek", "40", "9/40", "pensionsbroek: pensionsbroek_format"),
        ("under_administration", None, True, "under_administration: not_nullable"),
        ("tilkendelsesdato", None, dt.date(1990, 1, 1), "tilkendelsesdato: not_nullable"),
    ],
)
def test_each_pensionssager_rule(column, bad, narrowly_good, rule):
    broken = check_pensionssager(sager(sag(), sag(**{"cpr": "0202502345", column: bad})), JUDGED_ON)
    assert not broken.passed
    assert broken.failures_by_check == {rule: 1}
    assert broken.failure_count == 1
    assert len(broken.examples) == 1 and broken.examples[0].startswith(rule)
    assert check_pensionssager(sager(sag(), sag(**{"cpr": "0202502345", column: narrowly_good})), JUDGED_ON).passed


def test_pensionssager_cpr_is_unique():
    result = check_pensionssager(sager(sag(), sag(), sag("0202502345")), JUDGED_ON)
    assert result.failures_by_check == {"cpr: field_uniqueness": 2}


def test_pensionssager_missing_column_and_wrong_type():
    result = check_pensionssager(
        sager().drop("udlandsophold").with_columns(pl.col("tilkendelsesdato").cast(pl.String)), JUDGED_ON
    )
    assert not result.passed
    assert result.failures_by_check["pensionssager: column_in_dataframe"] == 1
    assert result.failures_by_check["tilkendelsesdato: dtype('Date')"] == 1


def test_cpr_stored_as_integer_is_a_failure_without_showing_it():
    result = check_pensionssager(sager().with_columns(pl.col("cpr").cast(pl.Int64)), JUDGED_ON)
    assert result.failures_by_check["cpr: dtype('String')"] == 1
    assert_masked(result.examples)
    assert not any(re.search(r"[0-9]{9}", example) for example in result.examples)


def test_a_lazy_frame_is_judged_on_its_data_too():
    assert not check_pensionssager(sager(sag(pensionstype="XX")).lazy(), JUDGED_ON).passed


def test_validation_depth_from_the_environment_does_not_skip_data_checks(monkeypatch):
    from pandera.config import ValidationDepth, config_context

    with config_context(validation_depth=ValidationDepth.SCHEMA_ONLY):
        assert not check_pensionssager(sager(sag(pensionstype="XX")), JUDGED_ON).passed


# --- the pensionsberegning contract ---------------------------------------------------------


def test_good_pensionsberegning_passes():
    assert check_pensionsberegning(beregninger(), PERIODE, sager()).passed


@pytest.mark.parametrize(
    ("bad", "narrowly_good", "rule"),
    [
        ({"periode": "2027-03"}, {"periode": PERIODE}, "periode: periode_is_P"),
        ({"brutto_oere": -1, "skat_oere": -1, "netto_oere": 0}, {"brutto_oere": 0, "skat_oere": 0, "netto_oere": 0}, None),
        ({"skat_oere": -1, "netto_oere": 1_500_001}, {"skat_oere": 0, "netto_oere": 1_500_000}, "skat_oere: not_negative"),
        ({"skat_oere": 1_500_001, "netto_oere": -1}, {"skat_oere": 1_500_000, "netto_oere": 0}, "pensionsberegning: skat_at_most_brutto"),
        ({"netto_oere": 1_050_001}, {"netto_oere": 1_050_000}, "pensionsberegning: netto_is_brutto_minus_skat"),
        ({"cpr": "1111111118"}, {"cpr": "1512453456"}, "cpr: cpr_in_pensionssager"),
        ({"cpr": "3102401234"}, {"cpr": "0202502345"}, "cpr: valid_cpr+cpr: cpr_in_pensionssager"),
        ({"udbetales": None}, {"udbetales": False}, "udbetales: not_nullable"),
    ],
)
def test_each_pensionsberegning_rule(bad, narrowly_good, rule):
    broken = check_pensionsberegning(beregninger(beregning(), beregning("0202502345") | bad), PERIODE, sager())
    assert not broken.passed
    if rule is None:  # brutto −1 cannot be shown alone: skat is then negative too
        assert broken.failures_by_check == {"brutto_oere: not_negative": 1, "skat_oere: not_negative": 1}
    else:  # "a+b": both rules, once each
        assert broken.failures_by_check == {r: 1 for r in rule.split("+")}
    good = beregninger(beregning(), beregning("0202502345") | narrowly_good)
    assert check_pensionsberegning(good, PERIODE, sager()).passed


def test_pensionsberegning_cpr_is_unique_and_needs_pensionssager_for_p():
    twice = check_pensionsberegning(beregninger(beregning(), beregning()), PERIODE, sager())
    assert twice.failures_by_check == {"cpr: field_uniqueness": 2}
    no_cases = check_pensionsberegning(beregninger(), PERIODE, sager().clear())
    assert no_cases.failures_by_check == {"cpr: cpr_in_pensionssager": 2}


def test_pensionsberegning_invalid_periode_argument():
    with pytest.raises(ValueError, match="periode"):
        check_pensionsberegning(beregninger(), "2027-2", sager())


# --- masking --------------------------------------------------------------------------------


def test_examples_are_masked_and_at_most_five():
    cprs = ["0101401234", "0202502345", "1512453456", "3112993999", "0101011111", "0303033333"]
    broken = sager(
        sag(cprs[0], samlever_cpr="3102401234", samlevende=True),
        sag(cprs[0]),  # duplicate
        sag("31024O1234"),  # not ten digits
        sag(cprs[2], bopaelskommune="101", samlever_cpr="01014012345"),
        sag(cprs[3], pensionstype="XX", sagsstatus="X", forud_bagud="X", tillaegsprocent=Decimal("101")),
    )
    result = check_pensionssager(broken, JUDGED_ON)
    assert result.failure_count >= 8
    assert len(result.examples) == 5
    assert_masked(result.examples + list(result.failures_by_check) + [result.summary()])
    for cpr in cprs + ["3102401234", "31024O1234", "01014012345"]:
        assert all(cpr not in example for example in result.examples)
    assert any("010140-****" in example for example in result.examples)

    rows = check_pensionsberegning(
        beregninger(beregning(cprs[0], netto_oere=1), beregning(cprs[1], skat=2_000_000, brutto=1)), PERIODE, sager()
    )
    assert rows.failures_by_check.keys() >= {"pensionsberegning: netto_is_brutto_minus_skat"}
    assert_masked(rows.examples)


@given(st.lists(st.text(alphabet="0123456789O -", min_size=9, max_size=12), min_size=1, max_size=8))
@settings(max_examples=50, deadline=None)
def test_no_example_ever_shows_a_cpr(cprs):
    frame = sager(*(sag(cpr, samlever_cpr=cpr[::-1], pensionstype="XX") for cpr in cprs))
    result = check_pensionssager(frame, JUDGED_ON)
    assert_masked(result.examples)
    for cpr in cprs:
        digits = re.sub(r"[^0-9]", "", cpr)
        if len(digits) >= 10:
            assert all(cpr not in example for example in result.examples)


# --- the reader -----------------------------------------------------------------------------


def write(folder: Path, table: str, periode: str, frame: pl.DataFrame) -> Path:
    path = folder / table / f"{periode}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(path)
    return path


def test_read_returns_the_contract_dtypes(tmp_path):
    write(tmp_path, "pensionssager", PERIODE, sager().with_columns(pl.col("formue_oere").cast(pl.Int32)).select(
        reversed(PENSIONSSAGER_SCHEMA.names())
    ).with_columns(extra=pl.lit(1)))
    frame = RegisterResource(url=str(tmp_path)).read("pensionssager", PERIODE)
    assert frame.schema == PENSIONSSAGER_SCHEMA
    assert frame["bopaelskommune"].to_list() == ["0101"] * 3


CASE_COLUMNS = ("cpr", "sagsstatus", "bopaelskommune", "administrationskommune", "doedsdato")


def test_columns_read_alone_are_those_of_the_whole_file(tmp_path):
    write(tmp_path, "pensionssager", PERIODE, sager().with_columns(pl.col("formue_oere").cast(pl.Int32)).select(
        reversed(PENSIONSSAGER_SCHEMA.names())
    ))
    register = RegisterResource(url=str(tmp_path))
    chosen = register.read("pensionssager", PERIODE, ("doedsdato", "cpr"))
    assert chosen.columns == ["cpr", "doedsdato"]  # in the contract's order
    assert chosen.equals(register.read("pensionssager", PERIODE).select("cpr", "doedsdato"))
    periode, frame = register.newest_pensionssager(CASE_COLUMNS)
    assert periode == PERIODE and frame.columns == list(CASE_COLUMNS)
    with pytest.raises(ValueError, match="no column.*kpr"):
        register.read("pensionssager", PERIODE, ("cpr", "kpr"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop("formue_oere"), "missing column.*formue_oere"),
        (lambda f: f.with_columns(pl.col("tillaegsprocent").cast(pl.Float64)), "tillaegsprocent is Float64"),
        # A type the contract's can hold only for some values: those values are looked at.
        (lambda f: f.with_columns(pl.lit(Decimal("12345.67")).cast(pl.Decimal(9, 2)).alias("tillaegsprocent")), "do not fit"),
    ],
)
def test_a_file_refused_whole_is_refused_when_only_some_columns_are_read(tmp_path, change, message):
    write(tmp_path, "pensionssager", PERIODE, change(sager()))
    register = RegisterResource(url=str(tmp_path))
    for columns in (None, CASE_COLUMNS):
        with pytest.raises(RegisterError, match=message):
            register.read("pensionssager", PERIODE, columns)


def test_categorical_and_all_null_columns_are_widened(tmp_path):
    write(tmp_path, "pensionsberegning", PERIODE, beregninger().with_columns(
        pl.col("periode").cast(pl.Categorical), pl.col("brutto_oere").cast(pl.UInt32)
    ))
    frame = RegisterResource(url=str(tmp_path)).read("pensionsberegning", PERIODE)
    assert frame.schema == PENSIONSBEREGNING_SCHEMA
    assert frame["periode"].to_list() == [PERIODE, PERIODE]


def test_kommunekode_stored_as_integer_is_refused(tmp_path):
    path = write(tmp_path, "pensionssager", PERIODE, sager().with_columns(pl.col("bopaelskommune").cast(pl.Int64)))
    with pytest.raises(RegisterError) as error:
        RegisterResource(url=str(tmp_path)).read("pensionssager", PERIODE)
    assert "bopaelskommune is Int64, expected String" in str(error.value)
    assert str(path) in str(error.value) and REGISTER_URL in str(error.value)


@pytest.mark.parametrize(
    ("column", "dtype"),
    [("tillaegsprocent", pl.Float64), ("tilkendelsesdato", pl.Datetime("us")), ("udbetales", pl.Int8)],
)
def test_inexact_or_other_types_are_refused(tmp_path, column, dtype):
    frame = sager() if column in PENSIONSSAGER_SCHEMA else beregninger()
    table = "pensionssager" if column in PENSIONSSAGER_SCHEMA else "pensionsberegning"
    write(tmp_path, table, PERIODE, frame.with_columns(pl.col(column).cast(dtype)))
    with pytest.raises(RegisterError, match=f"{column} is"):
        RegisterResource(url=str(tmp_path)).read(table, PERIODE)


def test_missing_column_is_refused(tmp_path):
    write(tmp_path, "pensionsberegning", PERIODE, beregninger().drop("udbetales"))
    with pytest.raises(RegisterError, match="missing column.*udbetales"):
        RegisterResource(url=str(tmp_path)).read("pensionsberegning", PERIODE)


def test_missing_period_gives_a_clear_error(tmp_path):
    with pytest.raises(RegisterError) as error:
        RegisterResource(url=str(tmp_path)).read("pensionssager", PERIODE)
    message = str(error.value)
    assert message.startswith(f"registeret har ingen pensionssager for {PERIODE} ({tmp_path}")
    assert REGISTER_URL in message and "pensionssager/2027-02.parquet" in message


@pytest.mark.parametrize("content", [b"", b"not a parquet file", "truncated"])
def test_corrupt_parquet_fails_loudly_naming_the_file(tmp_path, content):
    if content == "truncated":
        buffer = io.BytesIO()
        sager().write_parquet(buffer)
        content = buffer.getvalue()[: len(buffer.getvalue()) // 2]
    path = tmp_path / "pensionssager" / f"{PERIODE}.parquet"
    path.parent.mkdir()
    path.write_bytes(content)
    with pytest.raises(RegisterError) as error:
        RegisterResource(url=str(tmp_path)).read("pensionssager", PERIODE)
    assert str(path) in str(error.value) and REGISTER_URL in str(error.value)
    assert "not a readable Parquet file" in str(error.value)


def test_periods_and_newest_snapshot(tmp_path):
    register = RegisterResource(url=str(tmp_path / "register"))
    assert register.periods("pensionssager") == []
    with pytest.raises(RegisterError, match=f"no pensionssager snapshot.*{REGISTER_URL}"):
        register.newest_pensionssager()
    for periode in ("2027-01", "2026-12", "2027-02"):
        write(tmp_path / "register", "pensionssager", periode, sager())
    folder = tmp_path / "register" / "pensionssager"
    for stray in (".tmp-abc-2027-03.parquet", "2027-13.parquet", "notes.txt", "2027-04.parquet.bak"):
        (folder / stray).write_bytes(b"x")
    write(tmp_path / "register", "pensionsberegning", "2027-05", beregninger())
    assert register.periods("pensionssager") == ["2026-12", "2027-01", "2027-02"]
    assert register.periods("pensionsberegning") == ["2027-05"]
    periode, frame = register.newest_pensionssager()
    assert periode == "2027-02" and frame.height == 3


def test_register_at_an_fsspec_url():
    generate_register("memory://register-test", ["2027-01", "2027-02"], persons=200, seed=5)
    register = RegisterResource(url="memory://register-test")
    assert register.periods("pensionsberegning") == ["2027-01", "2027-02"]
    assert register.read("pensionssager", "2027-02").height == 200


def test_file_url(tmp_path):
    write(tmp_path, "pensionsberegning", PERIODE, beregninger())
    assert RegisterResource(url=f"file://{tmp_path}").read("pensionsberegning", PERIODE).height == 2


def test_bad_arguments(tmp_path):
    register = RegisterResource(url=str(tmp_path))
    with pytest.raises(ValueError, match="unknown register table"):
        register.read("pensioner", PERIODE)
    with pytest.raises(ValueError, match="periode"):
        register.read("pensionssager", "2027-2")


def test_from_env(monkeypatch, tmp_path):
    monkeypatch.delenv(REGISTER_URL, raising=False)
    assert RegisterResource.from_env().url == "./var/register"
    monkeypatch.setenv(REGISTER_URL, str(tmp_path))
    assert RegisterResource.from_env().url == str(tmp_path)
    monkeypatch.setenv(REGISTER_URL, "nosuchscheme://x/y")
    with pytest.raises(ConfigError, match=REGISTER_URL):
        RegisterResource.from_env()


# --- Dagster --------------------------------------------------------------------------------

PARTITION = "2026-06"  # a period of the register (the periods are dynamic partitions of the instance)


def materialize(url: Path | str, state: Path | None = None) -> dg.ExecuteInProcessResult:
    """The register's assets and checks for PARTITION; the checks' remembered passes in `state`
    (by default a state store of its own next to the register)."""
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("periode", [PARTITION])
    state = state or Path(f"{url}-state")
    return dg.materialize(
        [pensionssager, pensionsberegning, pensionssager_kontrakt, pensionsberegning_kontrakt],
        resources={"register": RegisterResource(url=str(url)), "state": StateResource(url=str(state))},
        partition_key=PARTITION,
        instance=instance,
        raise_on_error=False,
    )


def check_evaluations(result: dg.ExecuteInProcessResult) -> dict:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def step_failures(result: dg.ExecuteInProcessResult) -> list[str]:
    """Each failed step's error with its causes (Dagster wraps the exception raised in the step)."""
    messages = []
    for event in result.get_step_failure_events():
        error, text = event.event_specific_data.error, ""
        while error is not None:
            text, error = text + error.message, error.cause
        messages.append(text)
    return messages


def test_good_register_materializes_and_passes_its_checks(tmp_path):
    generate_register(tmp_path, [PARTITION], persons=1000, seed=1)
    result = materialize(tmp_path)
    assert result.success
    checks = check_evaluations(result)
    assert checks["pensionssager_kontrakt"].passed and checks["pensionsberegning_kontrakt"].passed
    assert checks["pensionssager_kontrakt"].metadata["failure_count"].value == 0
    materialized = {tuple(m.asset_key.path): m.materialization.metadata for m in result.get_asset_materialization_events()}
    sager_metadata = materialized[("register", "pensionssager")]
    assert sager_metadata["rows"].value == 1000
    assert sum(sager_metadata[f"pensionstype_{t}"].value for t in ("FP", "FTP", "SEP", "TIP")) == 1000
    assert len(sager_metadata["sha256"].value) == 64
    assert materialized[("register", "pensionsberegning")]["rows"].value < 1000  # OPHOERT have none


def test_broken_register_fails_its_checks_and_the_run(tmp_path):
    generate_register(tmp_path, [PARTITION], persons=300, seed=2)
    folder = tmp_path / "pensionssager"
    cases = pl.read_parquet(folder / f"{PARTITION}.parquet")
    broken = pl.concat([cases, cases.head(2)]).with_columns(  # two duplicated CPRs
        bopaelskommune=pl.when(pl.int_range(pl.len()) == 5).then(pl.lit("9999")).otherwise("bopaelskommune")
    )
    broken.write_parquet(folder / f"{PARTITION}.parquet")
    calculation = pl.read_parquet(tmp_path / "pensionsberegning" / f"{PARTITION}.parquet")
    calculation.with_columns(netto_oere=pl.col("netto_oere") + 1).write_parquet(
        tmp_path / "pensionsberegning" / f"{PARTITION}.parquet"
    )
    result = materialize(tmp_path)
    assert not result.success
    checks = check_evaluations(result)
    sager_check = checks["pensionssager_kontrakt"]
    assert not sager_check.passed
    assert sager_check.metadata["failure_count"].value == 5
    assert sager_check.metadata["failures_by_check"].value == {
        "cpr: field_uniqueness": 4,
        "bopaelskommune: known_kommunekode": 1,
    }
    beregning_check = checks["pensionsberegning_kontrakt"]
    assert not beregning_check.passed
    assert beregning_check.metadata["failure_count"].value == calculation.height
    for evaluation in checks.values():
        assert_masked([evaluation.metadata["examples"].value, str(evaluation.metadata["failures_by_check"].value)])
        assert evaluation.metadata["examples"].value.count("-****") >= 1
    assert step_failures(result)  # blocking checks fail their steps: the period stops


def test_calculation_for_someone_without_a_case_fails_the_check(tmp_path):
    generate_register(tmp_path, [PARTITION], persons=200, seed=4)
    cases = pl.read_parquet(tmp_path / "pensionssager" / f"{PARTITION}.parquet")
    cases.filter(pl.col("sagsstatus") == "AKTIV").slice(1).write_parquet(
        tmp_path / "pensionssager" / f"{PARTITION}.parquet"
    )
    checks = check_evaluations(materialize(tmp_path))
    assert checks["pensionssager_kontrakt"].passed
    assert checks["pensionsberegning_kontrakt"].metadata["failures_by_check"].value["cpr: cpr_in_pensionssager"] >= 1


def test_corrupt_file_fails_the_run_naming_the_file(tmp_path):
    generate_register(tmp_path, [PARTITION], persons=50, seed=1)
    path = tmp_path / "pensionssager" / f"{PARTITION}.parquet"
    path.write_bytes(path.read_bytes()[:100])
    result = materialize(tmp_path)
    assert not result.success
    messages = step_failures(result)
    assert any(str(path) in m and REGISTER_URL in m for m in messages)
    assert "pensionssager_kontrakt" not in check_evaluations(result)


def test_missing_period_fails_the_run_with_a_clear_message(tmp_path):
    generate_register(tmp_path, ["2026-05"], persons=50, seed=1)
    result = materialize(tmp_path)
    assert not result.success
    assert any(f"registeret har ingen pensionssager for {PARTITION} ({tmp_path}" in m for m in step_failures(result))
    assert any(f"registeret har ingen pensionsberegning for {PARTITION}" in m for m in step_failures(result))


def test_register_defs():
    defs = dg.Definitions.merge(
        register_defs, dg.Definitions(resources={"register": RegisterResource(), "state": StateResource()})
    )
    keys = {tuple(k.path) for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {("register", "pensionssager"), ("register", "pensionsberegning")}
    specs = {spec.name: spec for check in (pensionssager_kontrakt, pensionsberegning_kontrakt) for spec in check.check_specs}
    assert set(specs) == {"pensionssager_kontrakt", "pensionsberegning_kontrakt"}
    assert all(spec.blocking for spec in specs.values())
    assert pensionssager.partitions_def is pensionsberegning.partitions_def
    assert pensionssager.group_names_by_key[dg.AssetKey(["register", "pensionssager"])] == "register"


def test_a_pass_is_remembered_for_the_same_bytes_and_contract_and_a_change_is_judged_again(tmp_path, monkeypatch):
    import assets.register as register_assets

    generate_register(tmp_path / "register", [PARTITION], persons=300, seed=3)
    state = tmp_path / "state"
    judged: list[str] = []
    for name in ("check_pensionssager", "check_pensionsberegning"):
        real = getattr(register_assets, name)
        monkeypatch.setattr(register_assets, name, lambda *a, _real=real, _name=name: judged.append(_name) or _real(*a))

    both = ["check_pensionsberegning", "check_pensionssager"]  # the checks run in either order
    assert materialize(tmp_path / "register", state).success
    assert sorted(judged) == both
    records = sorted(StateStore(str(state)).listdir("register/kontrakt/pensionssager"))
    assert len(records) == 1
    record = StateStore(str(state)).read_json(f"register/kontrakt/pensionssager/{records[0]}")
    assert record["passed"] and record["contract_version"] == register_assets.contract_version()

    # Another command, the same bytes: the passes are read, not judged again.
    checks = check_evaluations(materialize(tmp_path / "register", state))
    assert sorted(judged) == both
    assert checks["pensionssager_kontrakt"].passed and checks["pensionsberegning_kontrakt"].passed

    # The cases changed (a duplicate CPR): both are judged again (the calculation is judged
    # against the cases); the failure is judged in every command, never remembered, while the
    # calculation's new pass (against the new cases) is.
    path = tmp_path / "register" / "pensionssager" / f"{PARTITION}.parquet"
    cases = pl.read_parquet(path)
    pl.concat([cases, cases.head(1)]).write_parquet(path)
    for _ in range(2):
        checks = check_evaluations(materialize(tmp_path / "register", state))
        assert not checks["pensionssager_kontrakt"].passed
    assert judged[2:].count("check_pensionssager") == 2 and judged[2:].count("check_pensionsberegning") == 1

    # Another contract (a new release): judged again.
    cases.write_parquet(path)
    register_assets.contract_version.cache_clear()
    monkeypatch.setattr(register_assets.pl, "__version__", "0.0.0-another")
    try:
        assert check_evaluations(materialize(tmp_path / "register", state))["pensionssager_kontrakt"].passed
        assert sorted(judged[5:]) == both
    finally:
        register_assets.contract_version.cache_clear()
