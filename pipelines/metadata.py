"""Metadata the UI shows and plots (operations.md "Dagster": numeric metadata on every
materialization; sums at national scale must show and plot correctly)."""

import dagster as dg


def money_metadata(name: str, oere: int) -> dict[str, dg.MetadataValue]:
    """A sum of money as `<name>_oere` (the exact integer øre) and `<name>_kr` (kroner to plot).

    The UI's API gives an integer over 2^31 no numeric value (GraphQL `IntMetadataEntry.intValue`
    is a 32-bit Int, null above; only the text `intRepr` is left), and a national month is about
    2·10^12 øre, so the plot reads `<name>_kr`: a float of kroner, for display only. Every figure
    that counts (files, the state store, checks) is the integer øre; a float of kroner is exact to
    the øre up to 2^53 øre, far above any sum here."""
    return {
        f"{name}_oere": dg.MetadataValue.int(oere),
        f"{name}_kr": dg.MetadataValue.float(oere / 100),
    }
