"""Hand-made register rows for tests: a complete, valid `pensionssager` case (register.md) with
the values a test cares about changed."""

import datetime as dt
from decimal import Decimal


def case_row(cpr: str, bopaelskommune: str = "0101", **changes) -> dict:
    """One `pensionssager` row: an active folkepension case living in `bopaelskommune`."""
    row = {
        "cpr": cpr,
        "pensionstype": "FP",
        "sagsstatus": "AKTIV",
        "bopaelskommune": bopaelskommune,
        "bevillingskommune": bopaelskommune,
        "administrationskommune": None,
        "under_administration": False,
        "udbetaling_til_kommune": False,
        "doedsdato": None,
        "forud_bagud": "BAGUD",
        "tillaegsprocent": Decimal("100.00"),
        "helbredsprocent": None,
        "samlevende": False,
        "samlever_cpr": None,
        "formue_oere": None,
        "pensionsbroek": "40/40",
        "tilkendelsesdato": dt.date(2010, 1, 1),
        "bistands_plejetillaeg": False,
        "udlandsophold": False,
    }
    assert set(changes) <= set(row), f"not a pensionssager column: {set(changes) - set(row)}"
    return row | changes
