"""SF2610 Tidlig pension hændelser as plain polars functions (sf1411-sf2610.md "SF2610").

On the comparison of P with P′ (assets/sf1411d_rules.py `forskelle`), for every citizen whose
`pensionstype` is TIP in P′:
- TIP_PensionAdvis when `doedsdato` is set in P and was not in P′ (SamleverPNR when samlevende);
- TIP_PensionAfgoerelse for any difference in a column other than cpr and doedsdato: an Aendring
  per changed column in register.md's order; no case in P: every column with a value in P′,
  without Efter.
And the reconciliation of the TIP_OvergangFolkepension messages received with the snapshots."""

from __future__ import annotations

import polars as pl

from assets.sf1411d_rules import FOER, NU
from contracts.sf2610 import AENDRING_SCHEMA, AFGOERELSE_KOLONNER, register_tekst_expr


def _tip(diff: pl.DataFrame) -> pl.DataFrame:
    return diff.filter(pl.col("i_forrige") & (pl.col("pensionstype" + FOER) == "TIP"))


def advis(diff: pl.DataFrame) -> pl.DataFrame:
    """cpr, doedsdato, samlever_cpr (null unless samlevende in P) of every TIP_PensionAdvis."""
    return (
        _tip(diff)
        .filter(pl.col("i_nu") & pl.col("doedsdato" + NU).is_not_null() & pl.col("doedsdato" + FOER).is_null())
        .select(
            "cpr",
            pl.col("doedsdato" + NU).alias("doedsdato"),
            pl.when(pl.col("samlevende" + NU)).then(pl.col("samlever_cpr" + NU)).otherwise(None).alias("samlever_cpr"),
        )
        .sort("cpr")
    )


def afgoerelse_aendringer(diff: pl.DataFrame) -> pl.DataFrame:
    """The Aendring rows of every TIP_PensionAfgoerelse (contracts.sf2610.AENDRING_SCHEMA)."""
    tip = _tip(diff)
    frames = []
    for nr, kolonne in enumerate(AFGOERELSE_KOLONNER):
        foer, nu = pl.col(kolonne + FOER), pl.col(kolonne + NU)
        frames.append(
            tip.filter(
                (pl.col("i_nu") & foer.ne_missing(nu)) | (~pl.col("i_nu") & foer.is_not_null())
            ).select(
                "cpr",
                pl.lit(nr, dtype=pl.Int16).alias("felt_nr"),
                pl.lit(kolonne).alias("felt"),
                register_tekst_expr(kolonne, foer).alias("foer"),
                pl.when(pl.col("i_nu")).then(register_tekst_expr(kolonne, nu)).otherwise(None).alias("efter"),
            )
        )
    return pl.concat(frames).cast(AENDRING_SCHEMA).sort(["cpr", "felt_nr"])


def afstemning(
    overgange: pl.DataFrame, nu: pl.DataFrame, diff: pl.DataFrame, periode: str
) -> pl.DataFrame:
    """The reconciliation of sf1411-sf2610.md on snapshot P: each recorded transition
    (`overgange`: cpr, fra_periode) with FraPeriode ≤ P must show pensionstype FP in P
    (`nu`); each TIP → FP change between P′ and P (`diff`) must have had its message.
    Returns the differences: cpr, fejl (`ikke_FP_i_P`, `overgang_uden_besked`)."""
    due = overgange.filter(pl.col("fra_periode") <= periode).select("cpr").unique()
    not_fp = (
        due.join(nu.select("cpr", "pensionstype"), on="cpr", how="left")
        .filter(pl.col("pensionstype").ne_missing(pl.lit("FP")))
        .select("cpr", pl.lit("ikke_FP_i_P").alias("fejl"))
    )
    skift = diff.filter(
        pl.col("i_forrige") & pl.col("i_nu") & (pl.col("pensionstype" + FOER) == "TIP") & (pl.col("pensionstype" + NU) == "FP")
    ).select("cpr")
    uden = skift.join(overgange.select("cpr").unique(), on="cpr", how="anti").select(
        "cpr", pl.lit("overgang_uden_besked").alias("fejl")
    )
    return pl.concat([not_fp, uden]).sort("cpr", "fejl")
