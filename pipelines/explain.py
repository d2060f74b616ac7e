"""`pensionstraek explain`: the audit trail of operations.md "The audit trail: explain".

"What exactly did we send municipality KK for period P, and why?", answered from the state store
alone (pipelines/state.py), months later and after any number of later runs:

- the history of each request: its registered instructions (the ledger) and its rejected ones
  (the decisions' outcomes, with the values read back from the archived file);
- the version in force in P (assets/settlement_rules.versions_in_force over the ledger);
- every SF6111 version of KK for P that was sent (`deliveries/SF6111/<P>/<KK>.json`, the file kept
  at `outgoing/SF6111/<P>/<name>`, read with contracts/sf6111.py), the newest one that carried
  the request, its send record and technical receipt (`sent/<name>/record.json`);
- the settlement that version was made from, with the citizen's netto and walk
  (`archive/afregning/<P>/`, kept per distinct outcome, so a later re-run cannot overwrite it).

`explain()` returns one dict in the JSON shape of the spec (amounts as kroner text with two
decimals, times ISO 8601 with offset); `render_text()` writes it for a person. The CPR is in full
in this output only (an auditor's tool): nothing here logs.

With `--cpr` the object also carries one list per entry of CPR_SECTIONS (`opslag`, `beskeder`):
the integrations that record look-ups and messages about a citizen (SF1411, SF2610) put their
provider there, a function (state, cpr) -> list of dicts in the spec's shape."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl

from assets.settlement_rules import versions_in_force
from contracts.codes import kommunekoder
from contracts.money import format_kroner, parse_kroner
from contracts.sf6110 import RequestFile, decode_request_file
from contracts.sf6111 import decode_sf6111
from pipelines.calendar import TZ, parse_periode
from pipelines.deliveries import versions
from pipelines.state import StateStore

SF6111 = "SF6111"


def _no_opslag(state: StateStore, cpr: str) -> list[dict]:
    """SF1411 look-ups of the citizen: [{"tid", "aftale", "operation", "udfald"}] (filled by SF1411)."""
    return []


def _no_beskeder(state: StateStore, cpr: str) -> list[dict]:
    """Messages about the citizen: [{"beskedid", "beskedtype", "modtager", "periode", "leveret"}]."""
    return []


# (key, provider): with --cpr, explain adds key: provider(state, cpr) to the answer.
CPR_SECTIONS: tuple[tuple[str, Callable[[StateStore, str], list[dict]]], ...] = (
    ("opslag", _no_opslag),
    ("beskeder", _no_beskeder),
)


class ExplainError(ValueError):
    """The question cannot be asked as put (the message, in Danish, says why)."""


def iso(value: str | dt.datetime | None) -> str | None:
    """ISO 8601 with offset, to the second, in Danish time (the operator's clock)."""
    if value is None:
        return None
    instant = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=dt.timezone.utc)
    return instant.astimezone(TZ).isoformat(timespec="seconds")


def kroner(oere: int | None) -> str | None:
    return None if oere is None else format_kroner(oere)


# --- the history of a municipality's requests ---------------------------------------------------


def _registered(ledger: pl.DataFrame) -> list[dict]:
    return [
        {
            "anmodning_id": row["anmodning_id"],
            "cpr": row["cpr"],
            "handling": row["handling"],
            "fra_periode": row["fra_periode"],
            "til_periode": row["til_periode"],
            "filnavn": row["filnavn"],
            "file_transfer_uuid": row["file_transfer_uuid"],
            "modtaget": row["modtaget"],
            "position": row["position"],
            "beloeb": kroner(row["beloeb_oere"]),
            "status": "MODTAGET",
            "kode": None,
        }
        for row in ledger.iter_rows(named=True)
    ]


def _rejected(state: StateStore, kommunekode: str) -> list[dict]:
    """KK's instructions rejected one by one (U01–U08), with the values of the archived file."""
    rows = []
    for decision in state.decisions():
        if decision["kommunekode"] != kommunekode or decision["status"] != "MODTAGET" or not decision["antal_afvist"]:
            continue
        uuid, name = decision["file_transfer_uuid"], decision["filnavn"]
        rejected = state.outcomes(uuid).filter(pl.col("status") == "AFVIST")
        request_file = decode_request_file(state.read(f"archive/received/{uuid}/{name}"))
        if not isinstance(request_file, RequestFile):  # accepted once, so it decodes; never guess
            continue
        instructions = request_file.instructions.join(rejected.select("position", "kode"), on="position")
        for row in instructions.iter_rows(named=True):
            amount = parse_kroner(row["samlet_beloeb"])
            rows.append(
                {
                    "anmodning_id": row["anmodning_id"],
                    "cpr": row["cpr"],
                    "handling": row["handling"],
                    "fra_periode": row["fra_periode"],
                    "til_periode": row["til_periode"],
                    "filnavn": name,
                    "file_transfer_uuid": uuid,
                    "modtaget": dt.datetime.fromisoformat(decision["modtaget"]),
                    "position": row["position"],
                    # As received when it is no amount at all (U01 SamletBeloeb): what was sent.
                    "beloeb": kroner(amount) if amount is not None else row["samlet_beloeb"],
                    "status": "AFVIST",
                    "kode": row["kode"],
                }
            )
    return rows


def _concerns(instruction: dict, periode: str) -> bool:
    """An instruction judged for P: it starts in P, or it is an OPRET/AENDR whose span covers P."""
    fra, til = instruction["fra_periode"] or "", instruction["til_periode"]
    if fra == periode:
        return True
    return instruction["handling"] in ("OPRET", "AENDR") and fra <= periode and (not til or periode <= til)


# --- what was sent ----------------------------------------------------------------------------------


@dataclass
class SentVersion:
    loebenummer: int
    filnavn: str
    made_at: dt.datetime
    record: dict
    traek: dict[str, dict] = field(default_factory=dict)  # anmodning_id -> the file's Traek row

    def delivery(self) -> dict:
        record = self.record
        if record.get("status") == "acknowledged":
            kvittering = "SUCCESS"
        elif record.get("status") == "failed":
            kvittering = "FEJL: " + "; ".join(record.get("receipt_errors", []))
        else:
            kvittering = None  # no technical receipt yet
        return {
            "filnavn": self.filnavn,
            "loebenummer": self.loebenummer,
            "sendt": iso(record.get("sent_at")),
            "kvittering": kvittering,
        }


def _sent_versions(state: StateStore, kommunekode: str, periode: str) -> list[SentVersion]:
    """Every SF6111 version of KK for P whose send started, oldest first, with its rows."""
    sent = []
    for version in versions(state, SF6111, periode, kommunekode):
        record = state.sent_record(version["name"])
        if record is None:
            continue  # made, never sent (a blocking check stopped it): the municipality never had it
        _, traek = decode_sf6111(state.read(f"outgoing/{SF6111}/{periode}/{version['name']}"))
        sent.append(
            SentVersion(
                loebenummer=version["loebenummer"],
                filnavn=version["name"],
                made_at=dt.datetime.fromisoformat(version["made_at"]),
                record=record,
                traek={row["anmodning_id"]: row for row in traek.iter_rows(named=True)},
            )
        )
    return sent


@dataclass
class Settlement:
    """One archived settlement of P (assets/settlement_rules.TRAIL_SCHEMA)."""

    made_at: dt.datetime
    trail: pl.DataFrame

    def rows_of(self, kommunekode: str) -> dict[str, dict]:
        own = self.trail.filter(pl.col("kommunekode") == kommunekode)
        return {row["anmodning_id"]: row for row in own.iter_rows(named=True)}


def _settlements(state: StateStore, periode: str) -> list[Settlement]:
    folder = f"archive/afregning/{periode}"
    result = []
    for name in state.listdir(folder):
        stamp = dt.datetime.strptime(name.removesuffix(".parquet"), "%Y%m%dT%H%M%S%fZ").replace(tzinfo=dt.timezone.utc)
        result.append(Settlement(made_at=stamp, trail=state.read_frame(f"{folder}/{name}")))
    return result


_SAME = ("status", "kode", "anmodet_oere", "afregnet_oere", "traekart", "cpr")


def _made_from(version: SentVersion, kommunekode: str, settlements: list[Settlement]) -> Settlement | None:
    """The settlement a version was made from: the newest one before the version whose rows for
    KK are exactly the version's rows (else the newest with the same rows at all)."""

    def same(settlement: Settlement) -> bool:
        rows = settlement.rows_of(kommunekode)
        return rows.keys() == version.traek.keys() and all(
            all(rows[k][c] == version.traek[k][c] for c in _SAME) for k in rows
        )

    matching = [s for s in settlements if same(s)]
    before = [s for s in matching if s.made_at <= version.made_at]
    return (before or matching or [None])[-1]


def _afregning(row: dict, settlement: Settlement | None) -> dict:
    """What a settlement said of one request, with the citizen's netto and walk."""
    walk, netto = [], None
    if settlement is not None:
        citizen = settlement.trail.filter(pl.col("cpr") == row["cpr"]).sort("trin")
        walk = [
            {
                "anmodning_id": r["anmodning_id"],
                "kommunekode": r["kommunekode"],
                "beloeb": kroner(r["anmodet_oere"]),
                "status": r["status"],
            }
            for r in citizen.iter_rows(named=True)
        ]
        netto = citizen["netto_oere"][0] if citizen.height else None
    return {
        "status": row["status"],
        "kode": row["kode"],
        "afregnet_beloeb": kroner(row["afregnet_oere"]),
        "netto": kroner(netto),
        "rækkefølge": walk,
    }


# --- the answer -------------------------------------------------------------------------------------


def explain(
    state: StateStore,
    kommunekode: str,
    periode: str,
    *,
    anmodning_id: str | None = None,
    cpr: str | None = None,
) -> dict:
    """The audit trail of KK for P as one dict in the JSON shape of operations.md.

    Without narrowing: every request of KK active in P or with an instruction judged for P.
    `anmodning_id` or `cpr` narrow it to that request or that citizen's requests with KK, then
    shown whether or not they concern P (an auditor asking about one request wants its history)."""
    if kommunekode not in kommunekoder():
        raise ExplainError(f"{kommunekode!r} er ikke en kommunekode i kommuner.csv (fire cifre, fx 0101)")
    try:
        parse_periode(periode)
    except ValueError:
        raise ExplainError(f"{periode!r} er ikke en periode: skriv YYYY-MM, fx 2027-02") from None

    ledger = state.ledger().filter(pl.col("kommunekode") == kommunekode)
    instructions = sorted(
        _registered(ledger) + _rejected(state, kommunekode),
        key=lambda i: (i["modtaget"], i["filnavn"].encode(), i["position"]),
    )
    in_force = {row["anmodning_id"]: row for row in versions_in_force(ledger, periode).iter_rows(named=True)}
    sent = _sent_versions(state, kommunekode, periode)
    settlements = _settlements(state, periode)
    current = settlements[-1].rows_of(kommunekode) if settlements else {}

    by_request: dict[str, list[dict]] = {}
    for instruction in instructions:
        if instruction["anmodning_id"]:  # an empty or missing id (U01) names no request
            by_request.setdefault(instruction["anmodning_id"], []).append(instruction)

    def request_cpr(anmodning: str) -> str | None:
        history = by_request.get(anmodning, [])
        registered = [i for i in history if i["status"] == "MODTAGET"]
        return (registered or history or [{"cpr": None}])[0]["cpr"]

    if anmodning_id is not None or cpr is not None:
        chosen = [
            a for a in by_request
            if (anmodning_id is None or a == anmodning_id) and (cpr is None or request_cpr(a) == cpr)
        ]
    else:
        concerned = {a for a, history in by_request.items() if any(_concerns(i, periode) for i in history)}
        concerned |= set(current) | {a for v in sent for a in v.traek}
        chosen = [a for a in by_request if a in concerned]

    anmodninger = []
    for anmodning in sorted(chosen, key=str.encode):
        carriers = [v for v in sent if anmodning in v.traek]
        carrier = carriers[-1] if carriers else None
        if carrier is not None:
            afregning = _afregning(carrier.traek[anmodning], _made_from(carrier, kommunekode, settlements))
        elif anmodning in current:  # settled, not sent (yet): what the newest settlement said
            afregning = _afregning(current[anmodning], settlements[-1])
        else:
            afregning = None
        version = in_force.get(anmodning)
        anmodninger.append(
            {
                "anmodning_id": anmodning,
                "cpr": request_cpr(anmodning),
                "historik": [
                    {
                        "filnavn": i["filnavn"],
                        "file_transfer_uuid": i["file_transfer_uuid"],
                        "modtaget": iso(i["modtaget"]),
                        "handling": i["handling"],
                        "beloeb": i["beloeb"],
                        "status": i["status"],
                        "kode": i["kode"],
                    }
                    for i in by_request[anmodning]
                ],
                "i_kraft": None
                if version is None
                else {"handling": version["handling"], "traekart": version["traekart"], "beloeb": kroner(version["beloeb_oere"])},
                "afregning": afregning,
                "sf6111": carrier.delivery() if carrier is not None else None,
                # Every version of KK's file for P that went out, and what each said of the request
                # (None: the version did not carry it), so a correction can be read months later.
                "sf6111_versioner": [
                    {
                        **v.delivery(),
                        "status": v.traek[anmodning]["status"] if anmodning in v.traek else None,
                        "kode": v.traek[anmodning]["kode"] if anmodning in v.traek else None,
                        "afregnet_beloeb": kroner(v.traek[anmodning]["afregnet_oere"]) if anmodning in v.traek else None,
                    }
                    for v in sent
                ],
            }
        )
    answer: dict = {"kommunekode": kommunekode, "periode": periode, "anmodninger": anmodninger}
    if cpr is not None:
        for key, provider in CPR_SECTIONS:
            answer[key] = provider(state, cpr)
    return answer


# --- for a person ---------------------------------------------------------------------------------


def _amount(value: str | None) -> str:
    return f"{value} kr" if value is not None else "–"


def render_text(answer: dict) -> str:
    lines = [f"Kommune {answer['kommunekode']}, periode {answer['periode']}: {len(answer['anmodninger'])} anmodning(er)"]
    if not answer["anmodninger"]:
        lines.append("  Ingen anmodninger fra kommunen var aktive i perioden eller havde en instruktion for den.")
    for a in answer["anmodninger"]:
        lines += ["", f"Anmodning {a['anmodning_id']}  CPR {a['cpr']}", "  Historik:"]
        for h in a["historik"]:
            outcome = h["status"] + (f" {h['kode']}" if h["kode"] else "")
            amount = f" {h['beloeb']} kr" if h["beloeb"] is not None else ""
            lines.append(f"    {h['modtaget']}  {h['handling'] or '?'}{amount}  {outcome}  {h['filnavn']} ({h['file_transfer_uuid']})")
        v = a["i_kraft"]
        if v is None:
            lines.append(f"  I kraft i {answer['periode']}: ingen registreret instruktion fra {answer['periode']} eller før")
        else:
            what = " ".join(x for x in (v["handling"], v["traekart"], _amount(v["beloeb"]) if v["beloeb"] else None) if x)
            lines.append(f"  I kraft i {answer['periode']}: {what}")
        s = a["afregning"]
        if s is None:
            lines.append("  Afregning: ikke afregnet i perioden")
        else:
            code = f" {s['kode']}" if s["kode"] else ""
            lines.append(f"  Afregning: {s['status']}{code}, afregnet {_amount(s['afregnet_beloeb'])}, netto {_amount(s['netto'])}")
            for place, w in enumerate(s["rækkefølge"], start=1):
                mark = "  <- denne" if w["anmodning_id"] == a["anmodning_id"] else ""
                lines.append(f"    {place}. {w['kommunekode']} {w['anmodning_id']} {_amount(w['beloeb'])} {w['status']}{mark}")
        d = a["sf6111"]
        if d is None:
            lines.append("  SF6111: ikke sendt med nogen specifikationsliste")
        else:
            lines.append(
                f"  SF6111: {d['filnavn']} (Loebenummer {d['loebenummer']}), sendt {d['sendt'] or '–'}, "
                f"kvittering {d['kvittering'] or 'ingen endnu'}"
            )
        versioner = a["sf6111_versioner"]
        for v in versioner if d is not None and len(versioner) > 1 else []:
            said = f"{v['status']}{' ' + v['kode'] if v['kode'] else ''} {_amount(v['afregnet_beloeb'])}" if v["status"] else "uden anmodningen"
            lines.append(f"    version {v['loebenummer']}: {v['filnavn']} sendt {v['sendt'] or '–'}: {said}")
    for key, _provider in CPR_SECTIONS:
        if key in answer:
            lines += ["", f"{key.capitalize()}: {len(answer[key])}"]
            lines += [f"  {entry}" for entry in answer[key]]
    return "\n".join(lines)
