"""SF6110 intake rules (sf6110.md "Intake"): one delivered file in, one decision out. Pure: bytes and
frames in, frames out; no Dagster, no I/O. The orchestration (archive, state store, kvittering,
exactly once) is pipelines/intake.py.

- File level, in table order, the first that fails decides: F06 (the size alone), F01–F03 (`contracts.sf6110` decodes),
  F04 (sender and Kommunekode), F05 (the same bytes accepted before from the same sender).
- Instruction level, in file order, the first rule that fails decides: U01 (values, the
  expressions of `contracts.sf6110.u01_offences`), U02 (id repeated in the file), U03–U05 (the
  pension case), U06 (closed period), U07–U08 (the ledger of earlier files). All vectorized.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate

import polars as pl

from contracts.codes import kommunekoder
from contracts.ledger import LEDGER_SCHEMA, empty_ledger
from contracts.money import parse_kroner_expr
from contracts.sf6110 import (
    AFVIST,
    MODTAGET,
    UKENDT_KOMMUNEKODE,
    FileRejected,
    RequestFile,
    decode_request_file,
    u01_element_expr,
    u01_first_offence,
    u01_offence_frame,
)
from pipelines.calendar import TZ
from pipelines.calendar import first_open_period as calendar_first_open_period
from pipelines.config import Partners
from pipelines.state import sha256_hex

# A pass judges some tens of thousands of rows: polars' in-memory engine starts such a query for
# a fifth less CPU than the streaming one (issue 11: 98 files a run, several queries each).
SMALL_QUERY = "in-memory"

OUTCOME_SCHEMA = pl.Schema(
    {
        "position": pl.Int32,
        "anmodning_id": pl.String,  # exactly as received (the kvittering echoes it)
        "status": pl.String,  # MODTAGET | AFVIST
        "kode": pl.String,  # U01..U08, null when MODTAGET
        "element": pl.String,  # the offending element for U01, else null
    }
)

# The ledger columns U07/U08 look at (`judge_files` needs no others).
HISTORY_COLUMNS = ("kommunekode", "anmodning_id", "cpr", "handling")

# The columns of a pension case that U03–U05 look at (register.md `pensionssager`).
CASE_COLUMNS = ("cpr", "sagsstatus", "bopaelskommune", "administrationskommune", "doedsdato")


@dataclass(frozen=True)
class Prepared:
    """What judging a file takes from its bytes alone (`prepare_file`): pure, so that the files of
    a run are prepared on every core (pipelines/intake.py) while they are judged in order."""

    sha256: str
    decoded: RequestFile | FileRejected | None  # None: over max_bytes (F06: never parsed)
    offences: pl.DataFrame | None  # contracts.sf6110.u01_offence_frame of a RequestFile
    u01_element: pl.Series | None = None  # u01_first_offence of `offences`


def prepare_file(data: bytes, *, received: dt.datetime, max_bytes: int | None = None) -> Prepared:
    """Decode the file and evaluate U01's value rules on its instructions (on the received date)."""
    if max_bytes is not None and len(data) > max_bytes:
        return Prepared(sha256_hex(data), None, None)
    decoded = decode_request_file(data)
    if not isinstance(decoded, RequestFile):
        return Prepared(sha256_hex(data), decoded, None)
    offences = u01_offence_frame(decoded.instructions, received_second(received).astimezone(TZ).date())
    return Prepared(sha256_hex(data), decoded, offences, u01_first_offence(offences))


class CaseIndex:
    """The pension cases of one snapshot by CPR, for judging the many files of a run against it:
    a national snapshot has 1.5 million rows, and looking a file's CPRs up by scanning them all
    cost each file tens of milliseconds (issue 11). The index is the snapshot's CPRs as numbers,
    sorted with their rows (24 MB for 1.5 million), made on the second look-up, so a run of one
    file scans as before. A snapshot with a CPR twice, or one that is not a number, is always
    scanned (`_cases_of` refuses the first when a file names that CPR)."""

    # A CPR as a number (ten digits: below 2**34) and its row (below 2**30) are one UInt64, so the
    # index is one sort of plain numbers: half the CPU of an arg_sort and a gather (issue 11).
    _ROW_BITS = 30

    def __init__(self, pensionssager: pl.DataFrame):
        self.pensionssager = pensionssager
        self._lookups = 0
        self._keys: pl.Series | None = None  # the CPRs as UInt64, sorted
        self._rows: pl.Series | None = None  # the row of each key in `pensionssager`

    def _build(self) -> None:
        if not all(c in self.pensionssager.columns for c in CASE_COLUMNS):
            return
        keys = self.pensionssager["cpr"].cast(pl.UInt64, strict=False)
        rows = keys.len()
        if not rows or keys.null_count() or rows >> self._ROW_BITS or keys.max() >> (64 - self._ROW_BITS):
            return
        unit = 1 << self._ROW_BITS
        packed = (keys * unit + pl.int_range(rows, dtype=pl.UInt64, eager=True)).sort()
        keys = packed // unit
        if (keys.slice(1) == keys.slice(0, rows - 1)).any():
            return  # a CPR twice, or two spellings of one number ("0123456789", "+123456789")
        self._keys, self._rows = keys, packed % unit

    def cases_of(self, instructions: pl.DataFrame) -> pl.DataFrame:
        self._lookups += 1
        if self._lookups == 2:
            self._build()
        if self._keys is None:
            return _cases_of(self.pensionssager, instructions)
        cprs = instructions["cpr"].unique()
        # Sorted, the look-ups walk the index in one direction (a third faster than in file order).
        wanted = cprs.cast(pl.UInt64, strict=False).drop_nulls().unique().sort()
        at = self._keys.search_sorted(wanted).clip(0, self._keys.len() - 1)
        found = self._rows.gather(at.filter(self._keys.gather(at) == wanted))
        # As a mask in the snapshot's order: cheaper than gathering the rows one by one.
        in_snapshot = pl.zeros(self.pensionssager.height, pl.Boolean, eager=True).scatter(found, True)
        cases = self.pensionssager.select(CASE_COLUMNS).filter(in_snapshot)
        # A number is also the case of another spelling of it: only the CPRs asked, as a scan finds.
        return cases.filter(pl.col("cpr").is_in(cprs.implode()))


@dataclass(frozen=True)
class FileDecision:
    status: str  # MODTAGET | AFVIST
    kode: str | None  # F01..F05 when AFVIST
    kommunekode: str  # for the kvittering: the file's code if in kommuner.csv, else "0000"
    outcomes: pl.DataFrame  # OUTCOME_SCHEMA, one row per instruction in file order (none if AFVIST)
    registered: pl.DataFrame  # LEDGER_SCHEMA rows of the accepted instructions


def received_second(received: dt.datetime) -> dt.datetime:
    """sf6110.md "Received time": the instant in UTC, truncated to the second."""
    if received.tzinfo is None or received.utcoffset() is None:
        raise ValueError(f"the received time must be an aware instant, got the naive {received.isoformat()}")
    return received.astimezone(dt.timezone.utc).replace(microsecond=0)


def judge_file(
    data: bytes,
    *,
    sender: str,
    filnavn: str,
    file_transfer_uuid: str,
    received: dt.datetime,
    partners: Partners,
    accepted_before: frozenset[tuple[str, str]],
    pensionssager: pl.DataFrame,
    ledger: pl.DataFrame,
    max_bytes: int | None = None,
    first_open_period: Callable[[dt.datetime], str] = calendar_first_open_period,
    prepared: Prepared | None = None,
    cases: CaseIndex | None = None,
    judged: pl.DataFrame | None = None,
) -> FileDecision:
    """The decision for one delivered SF6110 file. `max_bytes` is PENSIONSTRAEK_MAX_SF6110_BYTES. `accepted_before` holds (sender, sha256 hex) of
    the files accepted at file level earlier; `ledger` the instructions registered earlier
    (contracts/ledger.py; HISTORY_COLUMNS suffice); `pensionssager` the newest snapshot (one row per cpr). `judged`: the
    file's instruction outcomes from `judge_files` against the same snapshot and ledger, if made."""
    received = received_second(received)
    # sf6110.md F06: judged before every other check, from the size alone (the file is not parsed,
    # so its Kommunekode is unknown: the kvittering says 0000).
    if max_bytes is not None and len(data) > max_bytes:
        return _file_rejected("F06", None)
    # `prepared`: made from these bytes by `prepare_file` (maybe in another process).
    prepared = prepared or prepare_file(data, received=received, max_bytes=max_bytes)
    decoded = prepared.decoded
    if isinstance(decoded, FileRejected):
        return _file_rejected(decoded.kode, decoded.kommunekode)

    kommunekode = decoded.kommunekode
    # F04: a code outside kommuner.csv (e.g. `101`, ` 0101 `), or one the account may not speak for.
    if kommunekode not in kommunekoder() or not partners.may_send_sf6110(sender, kommunekode):
        return _file_rejected("F04", kommunekode)
    # F05: only an earlier file ACCEPTED at file level counts; a copy of a rejected one is judged afresh.
    if (sender, prepared.sha256) in accepted_before:
        return _file_rejected("F05", kommunekode)

    outcomes = judged if judged is not None else judge_instructions(
        decoded.instructions,
        kommunekode=kommunekode,
        received=received,
        pensionssager=pensionssager,
        ledger=ledger,
        first_open_period=first_open_period,
        u01_element=prepared.u01_element,
        cases=cases,
    )
    registered = registrations(
        decoded.instructions,
        outcomes,
        kommunekode=kommunekode,
        received=received,
        filnavn=filnavn,
        file_transfer_uuid=file_transfer_uuid,
    )
    return FileDecision(MODTAGET, None, kommunekode, outcomes, registered)


def _file_rejected(kode: str, kommunekode: str | None) -> FileDecision:
    known = kommunekode if kommunekode in kommunekoder() else UKENDT_KOMMUNEKODE
    return FileDecision(AFVIST, kode, known, pl.DataFrame(schema=OUTCOME_SCHEMA), empty_ledger())


def judge_instructions(
    instructions: pl.DataFrame,
    *,
    kommunekode: str,
    received: dt.datetime,
    pensionssager: pl.DataFrame,
    ledger: pl.DataFrame,
    first_open_period: Callable[[dt.datetime], str] = calendar_first_open_period,
    u01_element: pl.Series | None = None,
    cases: CaseIndex | None = None,
) -> pl.DataFrame:
    """sf6110.md "Intake: instruction-level outcome" for the instructions of an accepted file
    (contracts.sf6110.INSTRUCTION_SCHEMA): one OUTCOME_SCHEMA row per instruction, in file order.
    `u01_element`: their first U01 offence (`prepare_file`), when already evaluated; `cases`:
    the `CaseIndex` of `pensionssager`, when many files are judged against it."""
    (outcomes,) = judge_files(
        [FileToJudge(instructions, kommunekode, received, u01_element)],
        pensionssager=pensionssager,
        ledger=ledger,
        first_open_period=first_open_period,
        cases=cases,
    )
    return outcomes


@dataclass(frozen=True)
class FileToJudge:
    instructions: pl.DataFrame  # contracts.sf6110.INSTRUCTION_SCHEMA
    kommunekode: str
    received: dt.datetime
    u01_element: pl.Series | None = None  # see judge_instructions


def judge_files(
    files: list[FileToJudge],
    *,
    pensionssager: pl.DataFrame,
    ledger: pl.DataFrame,
    first_open_period: Callable[[dt.datetime], str] = calendar_first_open_period,
    cases: CaseIndex | None = None,
) -> list[pl.DataFrame]:
    """`judge_instructions` of several files at once, in one polars pass (issue 11: a national
    intake judges 98 files, and a pass costs mostly per call, not per row): each file's outcomes
    exactly as judged alone against `ledger`. So the files must be of different municipalities:
    U07/U08 look at the ledger of the file's own municipality, which an earlier file of the same
    municipality would change."""
    kommunekoder = [f.kommunekode for f in files]
    if len(set(kommunekoder)) != len(kommunekoder):
        raise ValueError("files judged together must be of different municipalities (U07/U08 depend on each other)")
    frames = []
    for number, f in enumerate(files):
        received = received_second(f.received)
        judged_on = received.astimezone(TZ).date()  # README: a CPR is judged on the received date
        frames.append(
            f.instructions.lazy()
            .with_columns(u01_element_expr(judged_on) if f.u01_element is None else f.u01_element)
            .select(
                "position", "anmodning_id", "cpr", "handling", "fra_periode", "element",
                fil=pl.lit(number, dtype=pl.UInt32),
                kommunekode=pl.lit(f.kommunekode, dtype=pl.String),
                open_from=pl.lit(first_open_period(received), dtype=pl.String),
            )
        )
    instructions = pl.concat(frames, how="vertical").collect(engine=SMALL_QUERY)

    handling = pl.col("handling")
    kommunekode = pl.col("kommunekode")
    med_beloeb = handling.is_in(["OPRET", "AENDR"]).fill_null(False)  # U03–U05 apply to these only
    fra_dag = (pl.col("fra_periode") + "-01").str.to_date("%Y-%m-%d", strict=False)
    registered_before = pl.col("registered_before").fill_null(False)

    rules = {
        "U02": ~pl.struct("fil", "anmodning_id").is_first_distinct(),  # repeated within its file
        # A case is one row per cpr with a non-null sagsstatus: null after the join = no case.
        "U03": med_beloeb & (pl.col("sagsstatus").is_null() | (pl.col("sagsstatus") == "OPHOERT")),
        "U04": med_beloeb
        & ~(
            (pl.col("bopaelskommune") == kommunekode).fill_null(False)
            | (pl.col("administrationskommune") == kommunekode).fill_null(False)
        ),
        "U05": med_beloeb & (pl.col("doedsdato") < fra_dag),
        "U06": pl.col("fra_periode") < pl.col("open_from"),  # `YYYY-MM` sorts as text in calendar order
        "U07": (handling == "OPRET") & registered_before,
        # Registered "earlier in the same file" needs no look here: any later instruction with the
        # same AnmodningId in this file is U02 before U07/U08 are reached, so only the ledger of
        # earlier files matters.
        "U08": handling.is_in(["AENDR", "OPHOER"])
        & (
            ~registered_before
            | (pl.col("registered_cprs").list.len() != 1)
            | (pl.col("registered_cprs").list.first() != pl.col("cpr"))
            | pl.col("ophoert").fill_null(False)
        ),
    }
    kode = pl.coalesce(
        pl.when(pl.col("element").is_not_null()).then(pl.lit("U01")),
        *(pl.when(rule.fill_null(False)).then(pl.lit(code)) for code, rule in rules.items()),
    )
    judged = (
        instructions.lazy()
        .join(
            (_cases_of(pensionssager, instructions) if cases is None else cases.cases_of(instructions)).lazy(),
            on="cpr", how="left", maintain_order="left",
        )  # fmt: skip
        .join(
            _ledger_history(ledger, instructions).lazy(),
            on=["kommunekode", "anmodning_id"], how="left", maintain_order="left",
        )  # fmt: skip
        .with_columns(kode=kode)
        .select(
            "position",
            "anmodning_id",
            status=pl.when(pl.col("kode").is_null()).then(pl.lit(MODTAGET)).otherwise(pl.lit(AFVIST)),
            kode="kode",
            element=pl.when(pl.col("kode") == "U01").then(pl.col("element")),
        )
        .collect(engine=SMALL_QUERY)
        .cast(OUTCOME_SCHEMA)
    )
    # The joins keep the rows in order (a case per CPR, a history per AnmodningId): file by file.
    starts = [0, *accumulate(f.instructions.height for f in files)]
    return [judged.slice(start, end - start) for start, end in zip(starts, starts[1:])]


def _cases_of(pensionssager: pl.DataFrame, instructions: pl.DataFrame) -> pl.DataFrame:
    """The pension cases of the file's CPRs (a national snapshot has 1.5 million rows)."""
    missing = [c for c in CASE_COLUMNS if c not in pensionssager.columns]
    if missing:
        raise ValueError(f"pensionssager lacks the column(s) {missing} (register.md)")
    cases = pensionssager.lazy().select(CASE_COLUMNS).filter(pl.col("cpr").is_in(instructions["cpr"].implode()))
    cases = cases.collect()
    if cases["cpr"].is_duplicated().any():
        raise ValueError("pensionssager has more than one row for a CPR: the register contract requires one per CPR")
    return cases


def _ledger_history(ledger: pl.DataFrame, instructions: pl.DataFrame) -> pl.DataFrame:
    """Per AnmodningId of `instructions` their municipality had registered before: the CPRs and
    whether it stopped. Only those ids are grouped: the ledger is 1.1 million rows after three
    years at a tenth of national scale, and grouping all of the pass's municipalities' rows grew
    every intake with the history (issue 11)."""
    return (
        ledger.lazy()
        .filter(pl.col("kommunekode").is_in(instructions["kommunekode"].unique().implode()))
        .join(instructions.lazy().select("kommunekode", "anmodning_id"), on=["kommunekode", "anmodning_id"], how="semi")
        .group_by("kommunekode", "anmodning_id")
        .agg(
            registered_before=pl.lit(True),
            registered_cprs=pl.col("cpr").unique(),
            ophoert=(pl.col("handling") == "OPHOER").any(),
        )
        .collect(engine=SMALL_QUERY)
    )


def registrations(
    instructions: pl.DataFrame,
    outcomes: pl.DataFrame,
    *,
    kommunekode: str,
    received: dt.datetime,
    filnavn: str,
    file_transfer_uuid: str,
) -> pl.DataFrame:
    """LEDGER_SCHEMA rows of the instructions whose outcome is MODTAGET, in file order."""
    accepted = outcomes.lazy().filter(pl.col("status") == MODTAGET).select("position")
    return (
        instructions.lazy()
        .join(accepted, on="position", how="semi", maintain_order="left")
        .select(
            kommunekode=pl.lit(kommunekode),
            anmodning_id="anmodning_id",
            cpr="cpr",
            handling="handling",
            traekart="traekart",
            fra_periode="fra_periode",
            til_periode="til_periode",
            beloeb_oere=parse_kroner_expr("samlet_beloeb"),  # null for OPHOER (it has none)
            modtaget=pl.lit(received_second(received), dtype=LEDGER_SCHEMA["modtaget"]),
            filnavn=pl.lit(filnavn),
            file_transfer_uuid=pl.lit(file_transfer_uuid),
            position="position",
        )
        .cast(LEDGER_SCHEMA)
        .collect(engine=SMALL_QUERY)
    )
