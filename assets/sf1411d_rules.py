"""SF1411_D Besked om tillægsprocent as plain polars functions (sf1411-sf2610.md "SF1411_D").

The snapshot of P is compared with that of P′ (the newest earlier period with a snapshot): only a
case whose row differs, or that is in one snapshot only, can make a message, because coverage
depends on nothing but the row's kommunekoder and the agreement's list, which is the same list
for both snapshots. So the comparison (one join of the two snapshots) narrows 1.5 M cases to the
few per cent that changed, and everything after it works on those.

For each SF1411_D agreement and each citizen covered in P or in P′:
- covered in both, an allowed field differs: an Aendring per changed allowed field;
- covered in P only: an Aendring without Foer per allowed field with a value in P;
- covered in P′ only: OmfattesIkkeLaengere.
Nothing is said about fields the agreement does not allow."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from contracts.register import PENSIONSSAGER_SCHEMA
from contracts.sf1411 import SOCIAL_PENSION_KOLONNER
from contracts.sf1411d import AENDRING_SCHEMA, tekst_expr

KOLONNER = tuple(c for c in PENSIONSSAGER_SCHEMA.names() if c != "cpr")
KOMMUNE_KOLONNER = ("bopaelskommune", "bevillingskommune", "administrationskommune")
FOER, NU = "__foer", "__nu"  # suffixes of P′'s and P's columns in the comparison


def forskelle(forrige: pl.DataFrame, nu: pl.DataFrame) -> pl.DataFrame:
    """The cases that differ between P′ (`forrige`) and P (`nu`), both pensionssager frames: one
    row per such CPR with `i_forrige`, `i_nu` and every column twice (`<col>__foer`,
    `<col>__nu`, null on the side without the case)."""
    left = forrige.select("cpr", pl.lit(True).alias("i_forrige"), *[pl.col(c).alias(c + FOER) for c in KOLONNER])
    right = nu.select("cpr", pl.lit(True).alias("i_nu"), *[pl.col(c).alias(c + NU) for c in KOLONNER])
    joined = left.join(right, on="cpr", how="full", coalesce=True)
    differs = pl.any_horizontal([pl.col(c + FOER).ne_missing(pl.col(c + NU)) for c in KOLONNER])
    return joined.filter(pl.col("i_forrige").is_null() | pl.col("i_nu").is_null() | differs).with_columns(
        pl.col("i_forrige").fill_null(False), pl.col("i_nu").fill_null(False)
    )


def aftale_frames(agreements: Mapping, lister: Mapping) -> dict[str, pl.DataFrame]:
    """The SF1411_D agreements (pipelines.agreements.Agreement by uuid) and their lists
    (pipelines.subscriptions.Vaerdiliste by uuid) as the frames the rules join with:
    `synlig` (aftale, modtager, kommune), `felter` (aftale, felt), `liste_pnr` (aftale, cpr),
    `liste_kommuner` (aftale, kommune)."""
    synlig, felter, pnr, kommuner = [], [], [], []
    for uuid, agreement in agreements.items():
        if "SF1411_D" not in agreement.services or not agreement.modtager:
            continue
        liste = lister.get(uuid)
        synlig += [(uuid, agreement.modtager, k) for k in sorted(agreement.kommuner)]
        felter += [(uuid, f) for f in agreement.felter]
        if liste is not None:
            pnr += [(uuid, c) for c in sorted(liste.pnr)]
            kommuner += [(uuid, k) for k in sorted(liste.kommuner)]
    return {
        "synlig": pl.DataFrame(synlig, schema={"aftale": pl.String, "modtager": pl.String, "kommune": pl.String}, orient="row"),
        "felter": pl.DataFrame(felter, schema={"aftale": pl.String, "felt": pl.String}, orient="row"),
        "liste_pnr": pl.DataFrame(pnr, schema={"aftale": pl.String, "cpr": pl.String}, orient="row"),
        "liste_kommuner": pl.DataFrame(kommuner, schema={"aftale": pl.String, "kommune": pl.String}, orient="row"),
    }


def omfattet(sager: pl.DataFrame, aftaler: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """(aftale, modtager, cpr) for every citizen of `sager` (cpr and the three kommunekoder)
    covered by an agreement: visible under it (one of the three kommunekoder is one of its
    kommuner) and either the CPR or one of the three kommunekoder is on its list."""
    kommuner = (
        sager.select("cpr", pl.concat_list(list(KOMMUNE_KOLONNER)).alias("kommune"))
        .explode("kommune")
        .drop_nulls("kommune")
        .unique()
    )
    synlig = kommuner.join(aftaler["synlig"], on="kommune").select("aftale", "modtager", "cpr").unique()
    paa_liste = pl.concat(
        [
            kommuner.join(aftaler["liste_kommuner"], on="kommune").select("aftale", "cpr"),
            sager.select("cpr").join(aftaler["liste_pnr"], on="cpr").select("aftale", "cpr"),
        ]
    ).unique()
    return synlig.join(paa_liste, on=["aftale", "cpr"], how="semi")


def _side(diff: pl.DataFrame, suffix: str, present: str) -> pl.DataFrame:
    return diff.filter(pl.col(present)).select(
        "cpr", *[pl.col(k + suffix).alias(k) for k in KOMMUNE_KOLONNER]
    )


def aendringer(diff: pl.DataFrame, aftaler: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """The SF1411_D notices of a comparison (`forskelle`) as the long frame of changes
    (contracts.sf1411d.AENDRING_SCHEMA): one row per Aendring, or one row with `felt` null for
    OmfattesIkkeLaengere."""
    foer = omfattet(_side(diff, FOER, "i_forrige"), aftaler).with_columns(pl.lit(True).alias("o_foer"))
    nu = omfattet(_side(diff, NU, "i_nu"), aftaler).with_columns(pl.lit(True).alias("o_nu"))
    par = foer.join(nu, on=["aftale", "modtager", "cpr"], how="full", coalesce=True).with_columns(
        pl.col("o_foer").fill_null(False), pl.col("o_nu").fill_null(False)
    )
    med = par.join(diff, on="cpr")
    frames = []
    for nr, (felt, kolonne) in enumerate(SOCIAL_PENSION_KOLONNER.items()):
        foer_tekst = tekst_expr(kolonne, pl.col(kolonne + FOER))
        nu_tekst = tekst_expr(kolonne, pl.col(kolonne + NU))
        changed = pl.col(kolonne + FOER).ne_missing(pl.col(kolonne + NU))
        frames.append(
            med.filter(
                (pl.col("o_foer") & pl.col("o_nu") & changed)
                | (~pl.col("o_foer") & pl.col("o_nu") & pl.col(kolonne + NU).is_not_null())
            ).select(
                "aftale",
                "modtager",
                "cpr",
                pl.lit(nr, dtype=pl.Int16).alias("felt_nr"),
                pl.lit(felt).alias("felt"),
                pl.when(pl.col("o_foer")).then(foer_tekst).otherwise(None).alias("foer"),
                nu_tekst.alias("efter"),
            )
        )
    allowed = pl.concat(frames).join(aftaler["felter"], on=["aftale", "felt"], how="semi")
    ophoert = par.filter(pl.col("o_foer") & ~pl.col("o_nu")).select(
        "aftale",
        "modtager",
        "cpr",
        pl.lit(None, dtype=pl.Int16).alias("felt_nr"),
        pl.lit(None, dtype=pl.String).alias("felt"),
        pl.lit(None, dtype=pl.String).alias("foer"),
        pl.lit(None, dtype=pl.String).alias("efter"),
    )
    return pl.concat([allowed.cast(AENDRING_SCHEMA), ophoert.cast(AENDRING_SCHEMA)]).sort(
        ["aftale", "cpr", "felt_nr"], nulls_last=True
    )
