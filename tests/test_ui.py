"""What an operator sees in the Dagster UI, in a real Chromium (operations.md "Dagster": the UI is
part of the product; issue 8, item 9). The world (tests/browser.py): 2026-09 and 2026-10 settled
in one range run by the command line, 2026-11 stopped by a broken register, 2026-12 and 2027-01
registered but not settled."""

from __future__ import annotations

import json
import time

import pytest

from tests.browser import BROKEN, GOOD, JOB, LATER

pytestmark = pytest.mark.browser

# operations.md: the graph reads as the flow of the business, left to right.
BUSINESS_ORDER = ("register", "sf6110", "settlement", "sf6111", "sf2601")
LATER_GROUPS = ("sf1411", "sf1411d", "sf2610")  # other issues add these; checked when present


@pytest.fixture
def page(dagster_ui, browser):  # the world is made before the browser starts
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    yield page
    context.close()


def group_box(page, name: str) -> dict | None:
    """The box of a group's node in the graph (the side bar lists the same names, further left)."""
    boxes = [b for b in (e.bounding_box() for e in page.get_by_text(name, exact=True).all()) if b and b["height"] > 0]
    return max(boxes, key=lambda b: b["x"]) if boxes else None


def metadata_value(page, label: str) -> str:
    row = page.locator("tr", has=page.get_by_text(label, exact=True)).first
    return row.inner_text().split()[-1]


def test_the_asset_graph_shows_the_groups_in_business_order(page, dagster_ui):
    page.goto(f"{dagster_ui.url}/asset-groups")
    page.get_by_text("settlement", exact=True).first.wait_for()
    page.wait_for_timeout(1000)  # the layout settles
    boxes = {name: group_box(page, name) for name in BUSINESS_ORDER}
    assert all(boxes.values()), boxes
    columns = [boxes[name]["x"] for name in BUSINESS_ORDER]
    # register and sf6110 feed settlement, which feeds sf6111 and sf2601: column by column.
    assert columns == sorted(columns), boxes
    assert columns[1] < columns[2] < columns[3], boxes
    groups = {e["groupName"] for e in _asset_nodes(dagster_ui)}
    for name in LATER_GROUPS:
        if name in groups:
            assert group_box(page, name) is not None, name


def test_a_periods_partition_shows_its_own_figures(page, dagster_ui):
    """2026-09 and 2026-10 were settled in one run; each partition shows that period's figures."""
    figures = dagster_ui.world.figures
    assert figures[GOOD[0]]["anmodninger"] != figures[GOOD[1]]["anmodninger"]  # so the test can tell
    for periode in GOOD:
        page.goto(f"{dagster_ui.url}/assets/settlement/afregning?view=partitions&partition={periode}")
        page.get_by_text("Latest materialization").wait_for()
        for label in ("anmodninger", "afregnet", "afvist", "afregnet_oere"):
            assert metadata_value(page, label) == str(figures[periode][label]), (periode, label)
        assert float(metadata_value(page, "afregnet_kr")) == figures[periode]["afregnet_oere"] / 100


def test_a_failing_blocking_check_is_visible_as_failing(page, dagster_ui):
    page.goto(f"{dagster_ui.url}/assets/register/pensionssager?view=checks")
    page.get_by_text("This is a blocking asset check.").wait_for()
    latest = page.locator("body").inner_text()
    assert "pensionssager_kontrakt" in latest
    assert "Failed" in latest and "field_uniqueness" in latest
    assert BROKEN in latest  # the period whose register breaks the contract


def test_the_command_lines_runs_are_under_their_job(page, dagster_ui):
    page.goto(f"{dagster_ui.url}/locations/pensionstraek/jobs/{JOB}/runs")
    for run_id in dagster_ui.world.run_ids:
        page.get_by_text(run_id[:8], exact=True).first.wait_for()


def test_a_backfill_of_two_periods_launched_from_the_ui_completes(page, dagster_ui):
    page.goto(f"{dagster_ui.url}/assets/settlement/afregning?view=partitions")
    page.get_by_text("Partitions Selected", exact=False).first.wait_for()
    keys = [[e["assetKey"]["path"][0], e["assetKey"]["path"][1]] for e in _asset_nodes(dagster_ui) if e["groupName"] != "sf6110"]
    launched = _graphql_from_page(
        page,
        """mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {
             __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }""",
        {"p": {"assetSelection": [{"path": k} for k in keys], "partitionNames": list(LATER), "fromFailure": False}},
    )["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    deadline = time.monotonic() + 240
    while True:
        backfill = _graphql_from_page(
            page,
            """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
                 ... on PartitionBackfill { status runs { runId status tags { key value } } } } }""",
            {"id": launched["backfillId"]},
        )["partitionBackfillOrError"]
        if backfill["status"] not in ("REQUESTED", "CANCELING", "FAILING") or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert backfill["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), backfill
    [run] = backfill["runs"]  # one run over the range (single-run backfill policy)
    assert run["status"] == "SUCCESS"
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert (tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"]) == LATER
    for periode in LATER:
        page.goto(f"{dagster_ui.url}/assets/settlement/afregning?view=partitions&partition={periode}")
        page.get_by_text("Latest materialization").wait_for()
        assert metadata_value(page, "anmodninger").isdigit()


def _asset_nodes(ui) -> list[dict]:
    return ui.graphql("{ assetNodes { groupName assetKey { path } } }")["assetNodes"]


def _graphql_from_page(page, query: str, variables: dict) -> dict:
    """The UI's own API, called from the page (same origin, as the UI's buttons do)."""
    answer = page.evaluate(
        """async ([query, variables]) => {
             const response = await fetch('/graphql', {method: 'POST',
               headers: {'Content-Type': 'application/json'}, body: JSON.stringify({query, variables})});
             return await response.text();
           }""",
        [query, variables],
    )
    data = json.loads(answer)
    assert "errors" not in data, data
    return data["data"]
