"""An independent peer of the settlement: settlement.md's rules written as DuckDB SQL, run on the
same state store and register as the product, so that the benchmark can (a) fail on any
difference in outcomes and (b) print how the product's time compares with a lean implementation
a data team could pick instead (issue 11).

    .venv/bin/python benchmarks/peer_duckdb.py --state DIR --register DIR --periode YYYY-MM --out DIR

Reads the committed ledger files (`ledger/<uuid>.parquet` whose decision `intake/<uuid>.json`
exists), `pensionssager/<P>.parquet` and `pensionsberegning/<P>.parquet`, and writes
`<out>/afregning.parquet` (one row per active request with its outcome) and one SF6111 file per
municipality with Loebenummer 1 (`<out>/SF6111_<kk>_<YYYYMM>_001.xml`), made by SQL string
aggregation. Nothing here imports the product's rules: only the code lists (contracts/*.csv) and
the calendar's payday are shared, as a second team would share the spec's tables."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# settlement.md "Settling one citizen": one outcome per active request. Parameters: $periode,
# $first_day. Tables: ledger, sager, beregning, traekart, koder.
SETTLEMENT_SQL = """
WITH RECURSIVE in_force AS (
    -- settlement.md 1-2: of the instructions with FraPeriode <= P, the one received last
    -- (between files with the same modtaget, the later file name; DuckDB compares bytes).
    SELECT * FROM ledger
    WHERE fra_periode <= $periode
    QUALIFY row_number() OVER (
        PARTITION BY kommunekode, anmodning_id
        ORDER BY modtaget DESC, filnavn DESC, file_transfer_uuid DESC, position DESC
    ) = 1
),
opret AS (
    -- the walk order uses the modtaget of the request's OPRET
    SELECT kommunekode, anmodning_id,
           coalesce(min(modtaget) FILTER (WHERE handling = 'OPRET'), min(modtaget)) AS opret_modtaget
    FROM ledger GROUP BY ALL
),
active AS (
    -- settlement.md 3: active when the version in force is OPRET/AENDR and P <= TilPeriode
    SELECT f.kommunekode, f.anmodning_id, f.cpr, f.traekart, f.beloeb_oere AS anmodet_oere, o.opret_modtaget
    FROM in_force f JOIN opret o USING (kommunekode, anmodning_id)
    WHERE f.handling IN ('OPRET', 'AENDR') AND (f.til_periode IS NULL OR $periode <= f.til_periode)
),
judged AS (
    SELECT a.*, t.prioritet, b.netto_oere,
           CASE
               WHEN s.doedsdato < $first_day THEN 'A01'
               WHEN s.cpr IS NULL OR b.cpr IS NULL OR NOT coalesce(b.udbetales, false) OR b.netto_oere <= 0
                   THEN 'A02'
           END AS kode_forud
    FROM active a
    JOIN traekart t USING (traekart)
    LEFT JOIN sager s USING (cpr)
    LEFT JOIN beregning b USING (cpr)
),
ordered AS (
    SELECT *, row_number() OVER (
        PARTITION BY cpr ORDER BY prioritet, opret_modtaget, kommunekode, anmodning_id
    ) AS trin
    FROM judged WHERE kode_forud IS NULL
),
walk AS (
    -- the priority walk, one step per place in the citizen's order; never split
    SELECT cpr, trin, kommunekode, anmodning_id,
           anmodet_oere <= netto_oere AS fits,
           netto_oere - CASE WHEN anmodet_oere <= netto_oere THEN anmodet_oere ELSE 0 END AS rest
    FROM ordered WHERE trin = 1
    UNION ALL
    SELECT o.cpr, o.trin, o.kommunekode, o.anmodning_id,
           o.anmodet_oere <= w.rest,
           w.rest - CASE WHEN o.anmodet_oere <= w.rest THEN o.anmodet_oere ELSE 0 END
    FROM walk w JOIN ordered o ON o.cpr = w.cpr AND o.trin = w.trin + 1
),
outcome AS (
    SELECT j.kommunekode, j.anmodning_id, j.cpr, j.traekart, j.anmodet_oere,
           coalesce(j.kode_forud, CASE WHEN w.fits THEN NULL ELSE 'A03' END) AS kode
    FROM judged j LEFT JOIN walk w USING (kommunekode, anmodning_id)
)
SELECT $periode AS periode, kommunekode, anmodning_id, cpr, traekart, anmodet_oere,
       CASE WHEN kode IS NULL THEN anmodet_oere ELSE 0 END AS afregnet_oere,
       CASE WHEN kode IS NULL THEN 'AFREGNET' ELSE 'AFVIST' END AS status,
       kode, k.tekst
FROM outcome LEFT JOIN koder k USING (kode)
ORDER BY kommunekode, anmodning_id
"""

# settlement.md "The SF6111 file", Loebenummer 1, one row per municipality.
SF6111_SQL = """
WITH amounts AS (
    SELECT *,
        -- øre -> kroner text with two decimals (integers only)
        (anmodet_oere // 100)::VARCHAR || '.' || lpad((anmodet_oere % 100)::VARCHAR, 2, '0') AS anmodet_kr,
        (afregnet_oere // 100)::VARCHAR || '.' || lpad((afregnet_oere % 100)::VARCHAR, 2, '0') AS afregnet_kr
    FROM afregning
),
per_kommune AS (
    SELECT kommunekode,
           count(*) AS antal, count(*) FILTER (WHERE status = 'AFREGNET') AS afregnet,
           sum(afregnet_oere) AS samlet,
           string_agg(
               '  <Traek>' || chr(10) ||
               '    <AnmodningId>' || xml(anmodning_id) || '</AnmodningId>' || chr(10) ||
               '    <CPR>' || xml(cpr) || '</CPR>' || chr(10) ||
               '    <Traekart>' || xml(traekart) || '</Traekart>' || chr(10) ||
               '    <AnmodetBeloeb>' || anmodet_kr || '</AnmodetBeloeb>' || chr(10) ||
               '    <AfregnetBeloeb>' || afregnet_kr || '</AfregnetBeloeb>' || chr(10) ||
               '    <Status>' || status || '</Status>' || chr(10) ||
               CASE WHEN status = 'AFVIST'
                    THEN '    <Aarsag><Kode>' || xml(kode) || '</Kode><Tekst>' || xml(tekst) || '</Tekst></Aarsag>' || chr(10)
                    ELSE '' END ||
               '  </Traek>' || chr(10),
               '' ORDER BY anmodning_id
           ) AS records
    FROM amounts GROUP BY kommunekode
)
SELECT kommunekode,
    '<?xml version="1.0" encoding="UTF-8"?>' || chr(10) ||
    '<TraekSpecifikationsliste xmlns="urn:oio:udk:pension:sf6111:1">' || chr(10) ||
    '  <Kommunekode>' || kommunekode || '</Kommunekode>' || chr(10) ||
    '  <Periode>' || $periode || '</Periode>' || chr(10) ||
    '  <Udbetalingsdato>' || $payday || '</Udbetalingsdato>' || chr(10) ||
    '  <Loebenummer>1</Loebenummer>' || chr(10) ||
    '  <AntalTraek>' || antal || '</AntalTraek>' || chr(10) ||
    '  <AntalAfregnet>' || afregnet || '</AntalAfregnet>' || chr(10) ||
    '  <AntalAfvist>' || (antal - afregnet) || '</AntalAfvist>' || chr(10) ||
    '  <SamletAfregnetBeloeb>' || (samlet // 100)::VARCHAR || '.' || lpad((samlet % 100)::VARCHAR, 2, '0')
        || '</SamletAfregnetBeloeb>' || chr(10) ||
    records ||
    '</TraekSpecifikationsliste>' || chr(10) AS data
FROM per_kommune ORDER BY kommunekode
"""


def committed_ledger_files(state: Path) -> list[str]:
    """The ledger files whose intake decision exists (the decision is the commit point)."""
    return sorted(
        str(path)
        for path in (state / "ledger").glob("*.parquet")
        if (state / "intake" / f"{path.stem}.json").exists()
    )


def run_peer(state: Path, register: Path, periode: str, out: Path) -> int:
    """Settle `periode` and write the outcomes and SF6111 files to `out`; returns the number of
    outcomes."""
    import datetime as dt

    import duckdb

    sys.path.insert(0, str(ROOT))
    from pipelines.calendar import udbetalingsdato  # the payday is the bank calendar's, not a rule

    out.mkdir(parents=True, exist_ok=True)
    db = duckdb.connect()
    db.execute("SET threads = 2")
    ledger_files = committed_ledger_files(state)
    if ledger_files:
        quoted = ", ".join("'" + name.replace("'", "''") + "'" for name in ledger_files)
        db.execute(f"CREATE VIEW ledger AS SELECT * FROM read_parquet([{quoted}])")
    else:
        db.execute(
            "CREATE VIEW ledger AS SELECT NULL::VARCHAR AS kommunekode, NULL::VARCHAR AS anmodning_id, "
            "NULL::VARCHAR AS cpr, NULL::VARCHAR AS handling, NULL::VARCHAR AS traekart, "
            "NULL::VARCHAR AS fra_periode, NULL::VARCHAR AS til_periode, NULL::BIGINT AS beloeb_oere, "
            "NULL::TIMESTAMPTZ AS modtaget, NULL::VARCHAR AS filnavn, NULL::VARCHAR AS file_transfer_uuid, "
            "NULL::INTEGER AS position WHERE false"
        )
    db.execute(
        f"CREATE VIEW sager AS SELECT cpr, doedsdato FROM read_parquet('{register}/pensionssager/{periode}.parquet')"
    )
    db.execute(
        "CREATE VIEW beregning AS SELECT cpr, netto_oere, udbetales "
        f"FROM read_parquet('{register}/pensionsberegning/{periode}.parquet') WHERE periode = '{periode}'"
    )
    contracts = ROOT / "contracts"
    db.execute(
        f"CREATE VIEW traekart AS SELECT traekart, prioritet::INTEGER AS prioritet "
        f"FROM read_csv('{contracts}/traekart.csv', delim=';', header=true, all_varchar=true)"
    )
    db.execute(
        f"CREATE VIEW koder AS SELECT kode, tekst "
        f"FROM read_csv('{contracts}/afvisningskoder.csv', delim=';', header=true, all_varchar=true)"
    )
    # xml(): the five characters XML text may not carry as they are
    db.execute(
        "CREATE MACRO xml(s) AS replace(replace(replace(s, '&', '&amp;'), '<', '&lt;'), '>', '&gt;')"
    )
    year, month = int(periode[:4]), int(periode[5:7])
    params = {"periode": periode, "first_day": dt.date(year, month, 1)}
    db.execute(f"CREATE TABLE afregning AS {SETTLEMENT_SQL}", params)
    db.execute(f"COPY afregning TO '{out}/afregning.parquet' (FORMAT parquet)")
    stamp = periode.replace("-", "")
    for kommunekode, data in db.execute(
        SF6111_SQL, {"periode": periode, "payday": udbetalingsdato(periode).isoformat()}
    ).fetchall():
        (out / f"SF6111_{kommunekode}_{stamp}_001.xml").write_bytes(data.encode("utf-8"))
    return db.execute("SELECT count(*) FROM afregning").fetchone()[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state", required=True, type=Path)
    parser.add_argument("--register", required=True, type=Path)
    parser.add_argument("--periode", required=True)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    started = time.perf_counter()
    rows = run_peer(args.state, args.register, args.periode, args.out)
    print(f"peer (DuckDB): {rows} outcomes for {args.periode} in {time.perf_counter() - started:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
