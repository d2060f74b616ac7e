"""The register contracts (register.md): the column types of `pensionssager` and
`pensionsberegning`, their pandera models, and the one way to judge a frame against them.

A register file that breaks its contract stops the period; it is never cleaned up silently. The
judgement (`ContractResult`) gives counts per rule and a few examples in which every CPR is masked.

Decimal columns (`tillaegsprocent`, `helbredsprocent`) are polars `Decimal(5, 2)`: exact, as the
table's decimal(5,2), so 100.00 is the largest value that fits."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import polars as pl

from contracts.codes import kommunekoder
from contracts.cpr import TEN_ASCII_DIGITS, mask_cpr, mask_text, valid_cpr_expr
from pipelines.calendar import last_day  # the one period calendar (no Dagster in it)

if TYPE_CHECKING:
    import pandera.polars as pa

PENSIONSTYPER = ("FP", "FTP", "SEP", "TIP")  # folkepension, førtidspension, seniorpension, tidlig pension
SAGSSTATUSER = ("AKTIV", "STANDSET", "OPHOERT")
FORUD_BAGUD = ("FORUD", "BAGUD")
PROCENT = pl.Decimal(5, 2)

PENSIONSSAGER_SCHEMA = pl.Schema(
    {
        "cpr": pl.String,
        "pensionstype": pl.String,
        "sagsstatus": pl.String,
        "bopaelskommune": pl.String,
        "bevillingskommune": pl.String,
        "administrationskommune": pl.String,
        "under_administration": pl.Boolean,
        "udbetaling_til_kommune": pl.Boolean,
        "doedsdato": pl.Date,
        "forud_bagud": pl.String,
        "tillaegsprocent": PROCENT,
        "helbredsprocent": PROCENT,
        "samlevende": pl.Boolean,
        "samlever_cpr": pl.String,
        "formue_oere": pl.Int64,
        "pensionsbroek": pl.String,
        "tilkendelsesdato": pl.Date,
        "bistands_plejetillaeg": pl.Boolean,
        "udlandsophold": pl.Boolean,
    }
)
PENSIONSSAGER_NULLABLE = frozenset(
    {
        "bevillingskommune",
        "administrationskommune",
        "doedsdato",
        "helbredsprocent",
        "samlever_cpr",
        "formue_oere",
        "pensionsbroek",
    }
)

PENSIONSBEREGNING_SCHEMA = pl.Schema(
    {
        "cpr": pl.String,
        "periode": pl.String,
        "brutto_oere": pl.Int64,
        "skat_oere": pl.Int64,
        "netto_oere": pl.Int64,
        "udbetales": pl.Boolean,
    }
)

SCHEMAS = {"pensionssager": PENSIONSSAGER_SCHEMA, "pensionsberegning": PENSIONSBEREGNING_SCHEMA}
CPR_COLUMNS = ("cpr", "samlever_cpr")
MAX_EXAMPLES = 5


# --- checks ---------------------------------------------------------------------------------
# Custom checks return a boolean frame, never a Python bool. pandera reports a check by its
# `error` text, so every check gets its rule name as that text. pandera is imported where a
# schema is made: only a frame that breaks a rule gets one (below), and importing pandera costs
# every command a tenth of a second (issue 11, the fixed cost).


def _valid_cpr(judged_on: dt.date) -> pa.Check:
    import pandera.polars as pa

    # README conventions "CPR": contracts.cpr.is_valid_cpr, vectorized. Null is judged by the
    # column's nullability, not here.
    return pa.Check(
        lambda data: data.lazyframe.select(pl.col(data.key).is_null() | valid_cpr_expr(data.key, judged_on)),
        name="valid_cpr",
        error="valid_cpr",
    )


def _one_of(name: str, values) -> pa.Check:
    import pandera.polars as pa

    return pa.Check.isin(sorted(values), name=name, error=name)


def _known_kommunekode() -> pa.Check:
    return _one_of("known_kommunekode", kommunekoder())


def _percent() -> pa.Check:
    import pandera.polars as pa

    return pa.Check.in_range(0, 100, error="percent_0_100")


def _row_check(name: str, rule: pl.Expr) -> pa.Check:
    import pandera.polars as pa

    return pa.Check(lambda data: data.lazyframe.select(rule), name=name, error=name)


def _column(dtype, *checks: pa.Check, nullable: bool = False, unique: bool = False) -> pa.Column:
    import pandera.polars as pa

    return pa.Column(dtype, checks=list(checks), nullable=nullable, unique=unique)


def pensionssager_schema(judged_on: dt.date) -> pa.DataFrameSchema:
    """register.md `pensionssager`: one row per valid CPR, code lists, kommunekoder, 0–100 %."""
    import pandera.polars as pa

    s = PENSIONSSAGER_SCHEMA
    columns = {
        "cpr": _column(s["cpr"], _valid_cpr(judged_on), unique=True),
        "pensionstype": _column(s["pensionstype"], _one_of("known_pensionstype", PENSIONSTYPER)),
        "sagsstatus": _column(s["sagsstatus"], _one_of("known_sagsstatus", SAGSSTATUSER)),
        "forud_bagud": _column(s["forud_bagud"], _one_of("known_forud_bagud", FORUD_BAGUD)),
        "tillaegsprocent": _column(s["tillaegsprocent"], _percent()),
        # register.md gives no range for helbredsprocent; a percentage outside 0–100 is not one.
        "helbredsprocent": _column(s["helbredsprocent"], _percent(), nullable=True),
        # A partner's CPR, when given, is a CPR like any other.
        "samlever_cpr": _column(s["samlever_cpr"], _valid_cpr(judged_on), nullable=True),
        # register.md: "e.g. 40/40"
        "pensionsbroek": _column(
            s["pensionsbroek"],
            pa.Check.str_matches(r"^[0-9]{1,2}/[0-9]{1,2}$", error="pensionsbroek_format"),
            nullable=True,
        ),
    }
    for name in ("bopaelskommune", "bevillingskommune", "administrationskommune"):
        columns[name] = _column(s[name], _known_kommunekode(), nullable=name in PENSIONSSAGER_NULLABLE)
    for name, dtype in s.items():
        columns.setdefault(name, _column(dtype, nullable=name in PENSIONSSAGER_NULLABLE))
    return pa.DataFrameSchema({name: columns[name] for name in s}, name="pensionssager", strict=False)


def pensionsberegning_schema(periode: str, pensionssager_cpr: pl.Series) -> pa.DataFrameSchema:
    """register.md `pensionsberegning` for P: one row per CPR of `pensionssager` for P,
    0 ≤ skat ≤ brutto, netto exactly brutto − skat, periode equal to P."""
    import pandera.polars as pa

    s = PENSIONSBEREGNING_SCHEMA
    known = pensionssager_cpr.drop_nulls().unique()
    i_pensionssager = pa.Check(
        lambda data: data.lazyframe.select(pl.col(data.key).is_in(known)),
        name="cpr_in_pensionssager",
        error="cpr_in_pensionssager",
    )
    return pa.DataFrameSchema(
        {
            "cpr": _column(s["cpr"], _valid_cpr(last_day(periode)), i_pensionssager, unique=True),
            "periode": _column(s["periode"], pa.Check.equal_to(periode, error="periode_is_P")),
            "brutto_oere": _column(s["brutto_oere"], pa.Check.ge(0, error="not_negative")),
            "skat_oere": _column(s["skat_oere"], pa.Check.ge(0, error="not_negative")),
            "netto_oere": _column(s["netto_oere"]),
            "udbetales": _column(s["udbetales"]),
        },
        checks=[
            _row_check("skat_at_most_brutto", pl.col("skat_oere") <= pl.col("brutto_oere")),
            _row_check(
                "netto_is_brutto_minus_skat", pl.col("netto_oere") == pl.col("brutto_oere") - pl.col("skat_oere")
            ),
        ],
        name="pensionsberegning",
        strict=False,
    )


# --- judging a frame ------------------------------------------------------------------------


@dataclass(frozen=True)
class ContractResult:
    passed: bool
    failure_count: int
    failures_by_check: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)  # masked, at most MAX_EXAMPLES

    def summary(self) -> str:
        """One line for an error message or a log (no CPR in it)."""
        if self.passed:
            return "contract passed"
        counts = ", ".join(f"{check}: {n}" for check, n in self.failures_by_check.items())
        return f"{self.failure_count} contract failures ({counts})"


PASSED = ContractResult(passed=True, failure_count=0)


def check_pensionssager(df: pl.DataFrame, judged_on: dt.date) -> ContractResult:
    """Judge a `pensionssager` snapshot; a CPR is valid if its birth date is not after `judged_on`."""
    if isinstance(df, pl.LazyFrame):  # a LazyFrame would get schema checks only
        df = df.collect()
    if _pensionssager_holds(df, judged_on):
        return PASSED
    return _judge(pensionssager_schema(judged_on), df)


def check_pensionsberegning(df: pl.DataFrame, periode: str, pensionssager: pl.DataFrame) -> ContractResult:
    """Judge the calculation for `periode` against its contract and `pensionssager` for the same P.
    CPRs are judged on the last day of P."""
    if isinstance(df, pl.LazyFrame):
        df = df.collect()
    cprs = pensionssager["cpr"] if "cpr" in pensionssager.columns else pl.Series("cpr", [], pl.String)
    cprs = cprs.cast(pl.String, strict=False)
    if _pensionsberegning_holds(df, periode, cprs):
        return PASSED
    return _judge(pensionsberegning_schema(periode, cprs), df)


# --- the same rules as one vectorised polars pass ----------------------------------------------
# pandera costs seconds on a national snapshot (1.5 M rows: a pass per check, string hashing for
# uniqueness and membership, the bookkeeping of failure cases). A snapshot that keeps its
# contract, the usual case, is recognised by one polars pass over the same rules; only a frame
# that breaks a rule is judged by pandera, which then gives the counts per rule and the masked
# examples. The fast pass is never more lenient than the schemas above: any doubt (a column
# missing, another dtype, a null where the schema allows none, a CPR that is not ten digits)
# sends the frame to pandera.


def _pensionssager_holds(df: pl.DataFrame, judged_on: dt.date) -> bool:
    if not _shape_holds(df, PENSIONSSAGER_SCHEMA, PENSIONSSAGER_NULLABLE):
        return False
    procent = [pl.lit(0).cast(PROCENT), pl.lit(100).cast(PROCENT)]
    known = sorted(kommunekoder())
    rules = [
        pl.col("pensionstype").is_in(list(PENSIONSTYPER)),
        pl.col("sagsstatus").is_in(list(SAGSSTATUSER)),
        pl.col("forud_bagud").is_in(list(FORUD_BAGUD)),
        pl.col("tillaegsprocent").is_between(*procent),
        pl.col("helbredsprocent").is_null() | pl.col("helbredsprocent").is_between(*procent),
        pl.col("pensionsbroek").is_null() | pl.col("pensionsbroek").str.contains(r"^[0-9]{1,2}/[0-9]{1,2}$"),
        *(pl.col(name).is_null() | pl.col(name).is_in(known) for name in ("bopaelskommune", "bevillingskommune", "administrationskommune")),
    ]
    if not _rules_hold(df, rules):
        return False
    cpr, samlever = _as_numbers(df["cpr"]), _as_numbers(df["samlever_cpr"])
    return (
        cpr is not None
        and samlever is not None
        and _all_valid(cpr, judged_on, unique=True)
        and _all_valid(samlever, judged_on)
    )


def _pensionsberegning_holds(df: pl.DataFrame, periode: str, pensionssager_cpr: pl.Series) -> bool:
    judged_on = last_day(periode)  # ValueError for a wrong periode, as the schema gives
    if not _shape_holds(df, PENSIONSBEREGNING_SCHEMA, frozenset()):
        return False
    rules = [
        pl.col("periode") == periode,
        pl.col("brutto_oere") >= 0,
        pl.col("skat_oere") >= 0,
        pl.col("skat_oere") <= pl.col("brutto_oere"),
        pl.col("netto_oere") == pl.col("brutto_oere") - pl.col("skat_oere"),
    ]
    if not _rules_hold(df, rules):
        return False
    cpr, known = _as_numbers(df["cpr"]), _as_numbers(pensionssager_cpr)
    return (
        cpr is not None
        and known is not None
        and _all_valid(cpr, judged_on, unique=True)
        and bool(cpr.is_in(known.implode()).all())
    )


def _shape_holds(df: pl.DataFrame, schema: pl.Schema, nullable: frozenset[str]) -> bool:
    """The schema's columns with its dtypes, rows, and no null outside `nullable`."""
    if not isinstance(df, pl.DataFrame) or df.is_empty():
        return False
    if any(df.schema.get(name) != dtype for name, dtype in schema.items()):
        return False
    return _rules_hold(df, [pl.col(name).is_not_null() for name in schema if name not in nullable])


def _rules_hold(df: pl.DataFrame, rules: list[pl.Expr]) -> bool:
    return bool(df.lazy().select(pl.all_horizontal([rule.fill_null(False).all() for rule in rules])).collect().item())


def _as_numbers(cprs: pl.Series) -> pl.Series | None:
    """The non-null CPRs as integers when each is ten ASCII digits (then the integer stands for
    exactly one CPR, and hashing it is cheap); None otherwise."""
    values = cprs.drop_nulls()
    if not values.str.contains(TEN_ASCII_DIGITS).all():
        return None
    return values.cast(pl.Int64)


def _all_valid(numbers: pl.Series, judged_on: dt.date, *, unique: bool = False) -> bool:
    """valid_cpr_expr for every CPR (as _as_numbers gives them), and with `unique` none of them
    twice. valid_cpr_expr depends on the first seven digits only (the birth date and the century
    digit), so each distinct prefix is judged once. Sorted, the numbers show a CPR given twice as
    two equal neighbours and their prefixes come in order, so neither needs a hash table of 1.5 M
    numbers (issue 11)."""
    ordered = numbers.sort()
    if unique and bool((ordered.diff().slice(1) == 0).any()):
        return False
    # Whole division by 1000 keeps the order, so the prefixes are sorted too.
    prefixes = (ordered // 1000).set_sorted().unique().cast(pl.String).str.zfill(7) + "000"
    return bool(pl.select(valid_cpr_expr(pl.lit(prefixes), judged_on).all()).item())


def _judge(schema: pa.DataFrameSchema, df: pl.DataFrame) -> ContractResult:
    from pandera.config import ValidationDepth, config_context
    from pandera.errors import SchemaErrors

    if isinstance(df, pl.LazyFrame):  # a LazyFrame would get schema checks only
        df = df.collect()
    # Data checks always run, whatever PANDERA_VALIDATION_DEPTH says.
    with config_context(validation_enabled=True, validation_depth=ValidationDepth.SCHEMA_AND_DATA):
        try:
            schema.validate(df, lazy=True)
        except SchemaErrors as errors:  # str(errors) holds raw failure cases: never shown
            return _result(errors.failure_cases, df)
    return ContractResult(passed=True, failure_count=0)


def _result(failure_cases: pl.DataFrame, df: pl.DataFrame) -> ContractResult:
    failures = failure_cases.with_columns(
        rule=pl.when(pl.col("column").is_null())
        .then(pl.col("check"))
        .otherwise(pl.col("column") + pl.lit(": ") + pl.col("check"))
    )
    by_check = failures.group_by("rule", maintain_order=True).len()
    failures_by_check = dict(zip(by_check["rule"].to_list(), by_check["len"].to_list(), strict=True))
    # The first failure of each rule, then the second of each, ...: as many rules as possible.
    first_failures = (
        failures.with_columns(nth=pl.int_range(pl.len()).over("rule"))
        .sort("nth", maintain_order=True)
        .head(MAX_EXAMPLES)
    )
    examples = [_example(row, df) for row in first_failures.iter_rows(named=True)]
    return ContractResult(
        passed=False, failure_count=failures.height, failures_by_check=failures_by_check, examples=examples
    )


def _example(failure: dict, df: pl.DataFrame) -> str:
    """`<rule>: <value> (row <n>, cpr DDMMYY-****)`, with every CPR masked."""
    value = failure["failure_case"]
    column, row = failure["column"], failure["index"]
    if failure["schema_context"] == "DataFrameSchema" and row is not None:
        value = None  # a whole row as JSON: the row number and masked cpr say enough
    elif column in CPR_COLUMNS and value is not None and row is not None:
        value = mask_cpr(value)
    elif value is not None and row is None:  # a dtype, a column name, or the error of a check
        value = (value.strip().splitlines() or [""])[0][:120]
    text = failure["rule"] + (f": {value!r}" if value is not None else "")
    if row is not None:
        text += f" (row {row}"
        if "cpr" in df.columns and 0 <= row < df.height and df.schema["cpr"] == pl.String:
            text += f", cpr {mask_cpr(df['cpr'][row])}"
        text += ")"
    return mask_text(text)
