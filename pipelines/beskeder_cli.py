"""`pensionstraek beskeder` and explain's `beskeder`: the messages as operations.md names them."""

from __future__ import annotations

import polars as pl

from contracts.beskedkuvert import TIP_OVERGANG_FOLKEPENSION
from contracts.cpr import mask_cpr
from pipelines import beskeder
from pipelines.state import StateStore


def besked_rows(state: StateStore, periode: str | None = None, *, cpr: str | None = None, masked: bool = True) -> list[dict]:
    """One dict per message: beskedid, beskedtype, retning (ud/ind), modtager, periode, status
    (venter/leveret/afvist/modtaget), cpr (DDMMYY-**** unless `masked` is False)."""
    status = beskeder.with_status(state, periode)
    if cpr is not None:
        status = status.filter(pl.col("cpr") == cpr)
    rows = [
        {
            "beskedid": r["beskedid"],
            "beskedtype": r["beskedtype"],
            "retning": "ud",
            "modtager": r["modtager"],
            "periode": r["periode"],
            "status": r["status"],
            "cpr": mask_cpr(r["cpr"]) if masked else r["cpr"],
        }
        for r in status.sort("periode", "beskedtype", "modtager", "cpr").iter_rows(named=True)
    ]
    for r in sorted(beskeder.received(state), key=lambda r: r["modtaget"]):
        if (periode and r["fra_periode"] != periode) or (cpr is not None and r["cpr"] != cpr):
            continue
        rows.append(
            {
                "beskedid": r["beskedid"],
                "beskedtype": TIP_OVERGANG_FOLKEPENSION,
                "retning": "ind",
                "modtager": beskeder.OWN_RECIPIENT,
                "periode": r["fra_periode"],
                "status": beskeder.MODTAGET,
                "cpr": mask_cpr(r["cpr"]) if masked else r["cpr"],
            }
        )
    if cpr is None and periode is None:
        for r in beskeder.rejected(state):
            rows.append(
                {
                    "beskedid": None,
                    "beskedtype": None,
                    "retning": "ind",
                    "modtager": beskeder.OWN_RECIPIENT,
                    "periode": None,
                    "status": beskeder.AFVIST_STATUS,
                    "cpr": None,
                }
            )
    return rows


def beskeder_for(state: StateStore, cpr: str) -> list[dict]:
    """explain --cpr: every message about a citizen, keys beskedid, beskedtype, modtager,
    periode, leveret (operations.md)."""
    return [
        {
            "beskedid": r["beskedid"],
            "beskedtype": r["beskedtype"],
            "modtager": r["modtager"],
            "periode": r["periode"],
            "leveret": r["status"] in (beskeder.LEVERET, beskeder.MODTAGET),
        }
        for r in besked_rows(state, cpr=cpr, masked=False)
    ]
