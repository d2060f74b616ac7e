"""SF1411 (sf1411-sf2610.md): the elements of the look-up answers and the register columns they
come from. The SOAP codec of the web service lives here too; no Dagster, no network."""

from __future__ import annotations

# SocialPension's optional elements in the answer's order (Periode, always answered, comes
# first and is not an agreement's choice), each with the pensionssager column it shows
# (register.md). SF1411_D notices use the same names and order for their Aendring elements.
SOCIAL_PENSION_KOLONNER: dict[str, str] = {
    "Sagsstatus": "sagsstatus",
    "Pensionstype": "pensionstype",
    "Bopaelskommune": "bopaelskommune",
    "Bevillingskommune": "bevillingskommune",
    "Administrationskommune": "administrationskommune",
    "UnderAdministration": "under_administration",
    "Samlevende": "samlevende",
    "SamleverPNR": "samlever_cpr",
    "FormueBeloeb": "formue_oere",
    "Tillaegsprocent": "tillaegsprocent",
    "Pensionsbroek": "pensionsbroek",
    "Tilkendelsesdato": "tilkendelsesdato",
    "Udlandsophold": "udlandsophold",
    "ForudBagud": "forud_bagud",
    "BistandsPlejetillaeg": "bistands_plejetillaeg",
}
SOCIAL_PENSION_FELTER: tuple[str, ...] = tuple(SOCIAL_PENSION_KOLONNER)
