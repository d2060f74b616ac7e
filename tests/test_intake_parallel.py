"""Intake on both cores (issue 11): the files of a run decoded in worker processes give exactly
the outcome of decoding them in the command's own process: the same kvitteringer, byte for byte,
and the same decisions, outcomes and ledger in the state store."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pipelines.config import default_partners
from pipelines.exchange import LocalExchangeClient
from pipelines import intake
from pipelines.intake import run_intake
from pipelines.register import RegisterResource
from pipelines.state import StateStore
from tests.test_intake import ALICE, BOB, CARL, DORA, UDEN_SAG, UFOEDT, aendr, new_world, ophoer, opret
from tests.world import copenhagen, request_file

# Files that reach most outcomes, and that depend on each other within the run: 0101's second
# file changes and stops what its first registered (U07/U08 against the run's own ledger), and
# the copy of an accepted file is F05.
FIRST_0101 = request_file("0101", [opret("K1", ALICE), opret("K2", UDEN_SAG), opret("K3", BOB, "75"), opret("K4", DORA)])
FILES = [
    ("SF6110_0101_1.xml", FIRST_0101),
    ("SF6110_0147_1.xml", request_file("0147", [opret("F1", BOB, "20"), opret("F2", UFOEDT), opret("F3", BOB, "1e3")])),
    ("SF6110_0151_1.xml", request_file("0151", [opret("B1", CARL), opret("B1", CARL), opret("B2", ALICE)])),
    ("SF6110_0101_2.xml", request_file("0101", [opret("K1", ALICE), ophoer("K3", BOB), aendr("K9", ALICE, "1.00"), aendr("K4", DORA, "5.00")])),
    ("SF6110_0101_3.xml", FIRST_0101),  # the same bytes again: F05
    ("SF6110_0151_2.xml", b"<TraekAnmodningSamling>not closed"),  # F01
    ("SF6110_0151_3.xml", request_file("0151", [opret("B3", CARL)]).replace(b"<AntalAnmodninger>1<", b"<AntalAnmodninger>2<")),  # F03
    ("SF6110_0147_2.xml", request_file("0147", [opret(f"M{i}", BOB, "1.00") for i in range(300)])),
]


def _taken_in(root: Path, workers: int) -> Path:
    with LocalExchangeClient(str(root / "exchange" / "udk-pension")) as client:
        report = run_intake(
            client, StateStore(str(root / "state")), default_partners(),
            RegisterResource(url=str(root / "register")).newest_pensionssager,
            run_id="run", workers=workers, parallel_min_bytes=0,
        )  # fmt: skip
    assert len(report.files) == len(FILES) and not report.undecided
    return root


def _state(root: Path) -> dict[str, bytes]:
    """Every file of the state store and of UDK's OUT/, the decisions without the moment made (and
    without the sweep record: when the last sweep for orphaned temporaries started)."""
    files = {}
    for folder in (root / "state", root / "exchange" / "udk-pension" / "OUT"):
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and "locks" not in p.parts):
            data = path.read_bytes()
            relative = str(path.relative_to(root))
            if relative == "state/index/swept.json":
                continue
            if relative.startswith("state/intake/") and relative.endswith(".json"):
                record = json.loads(data)
                record.pop("decided_at")
                data = json.dumps(record, sort_keys=True).encode()
            if relative.startswith("state/sent/") and relative.endswith("record.json"):
                record = json.loads(data)
                record = {k: v for k, v in record.items() if not k.endswith("_at")}
                data = json.dumps(record, sort_keys=True).encode()
            files[relative] = data
    return files


def test_one_and_two_workers_give_the_same_kvitteringer_and_state(tmp_path, monkeypatch):
    world = new_world(tmp_path / "world")
    for minute, (name, data) in enumerate(FILES):
        world.deliver(name, data, received=copenhagen(2026, 10, 1, 9, minute))
    # The same deliveries (names, FileTransferUUIDs, received times) twice.
    shutil.copytree(tmp_path / "world", tmp_path / "copy", symlinks=True)

    alone = _state(_taken_in(tmp_path / "world", workers=1))

    def not_here(*args, **kwargs):
        raise AssertionError("prepared in the command's process, not in a worker")

    # The workers are fresh processes with the real function; here, it would fail the file.
    monkeypatch.setattr(intake, "prepare_file", not_here)
    parallel = _state(_taken_in(tmp_path / "copy", workers=2))

    kvitteringer = [name for name in alone if "/OUT/SF6110K_" in name and not name.endswith(".trigger")]
    assert len(kvitteringer) == len(FILES)
    assert sorted(alone) == sorted(parallel)
    assert [name for name in alone if alone[name] != parallel[name]] == []
    # The run's dependencies were judged: U07/U08 against the first file, F05 for its copy.
    decisions = {json.loads(v)["filnavn"]: json.loads(v) for k, v in alone.items() if k.startswith("state/intake/") and k.endswith(".json")}
    assert decisions["SF6110_0101_3.xml"]["kode"] == "F05"
    assert decisions["SF6110_0151_2.xml"]["kode"] == "F01"
    assert decisions["SF6110_0151_3.xml"]["kode"] == "F03"
    assert decisions["SF6110_0101_2.xml"]["koder"] == {"U03": 1, "U07": 1, "U08": 1}
    assert decisions["SF6110_0147_1.xml"]["kontrakt"]["fejl"] == {"CPR": 1, "SamletBeloeb": 1, "Specifikation": 1}
