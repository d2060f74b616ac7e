"""Peak memory and time of judging SF6110 files of hostile shapes just under the F06 maximum
(issue 7, sf6110.md "whatever its shape"): each case decoded in its own process, whose peak RSS is
printed. Run: `.venv/bin/python benchmarks/sf6110_shapes.py` (about a minute)."""

from __future__ import annotations

import multiprocessing
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZE = 60 * 10**6  # 60 MB: under the 64 MiB default of PENSIONSTRAEK_MAX_SF6110_BYTES


def _header() -> bytes:
    from contracts.sf6110 import NS

    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<TraekAnmodningSamling xmlns="{NS}">'
        "<Kommunekode>0101</Kommunekode><DannetTidspunkt>2026-05-01T10:00:00+02:00</DannetTidspunkt>"
    ).encode()


def many_small_elements() -> bytes:
    body = b"<a/>" * ((SIZE - 300) // 4)
    return _header() + b"<AntalAnmodninger>0</AntalAnmodninger>" + body + b"</TraekAnmodningSamling>"


def one_big_text() -> bytes:
    instruction = (
        "<TraekAnmodning><AnmodningId>K1</AnmodningId><CPR>0101401234</CPR><Handling>OPRET</Handling>"
        "<Traekart>MAD</Traekart><FraPeriode>2026-11</FraPeriode><SamletBeloeb>1.00</SamletBeloeb>"
        "<Specifikation><Post><Tekst>a</Tekst><Beloeb>1.00</Beloeb></Post></Specifikation>"
        "<Reference>{}</Reference></TraekAnmodning>"
    ).format("x" * (SIZE - 800))
    return _header() + b"<AntalAnmodninger>1</AntalAnmodninger>" + instruction.encode() + b"</TraekAnmodningSamling>"


def ordinary_instructions() -> bytes:
    instruction = (
        "<TraekAnmodning><AnmodningId>K{}</AnmodningId><CPR>0101401234</CPR><Handling>OPRET</Handling>"
        "<Traekart>MAD</Traekart><FraPeriode>2026-11</FraPeriode><SamletBeloeb>1700.00</SamletBeloeb>"
        "<Specifikation><Post><Tekst>Madordning, hovedmåltid</Tekst><Beloeb>1500.00</Beloeb></Post>"
        "<Post><Tekst>Tøjvask</Tekst><Beloeb>200</Beloeb></Post></Specifikation>"
        "<Reference>Sag 27-4411</Reference></TraekAnmodning>\n"
    )
    n = SIZE // len(instruction.format(100000).encode())
    body = "".join(instruction.format(i) for i in range(n)).encode()
    return _header() + f"<AntalAnmodninger>{n}</AntalAnmodninger>".encode() + body + b"</TraekAnmodningSamling>"


CASES = {
    "many small elements": many_small_elements,
    "one big text": one_big_text,
    "ordinary instructions": ordinary_instructions,
}


def _measure(name: str, queue) -> None:
    from contracts.sf6110 import FileRejected, decode_request_file

    data = CASES[name]()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    decoded = decode_request_file(data)
    seconds = time.perf_counter() - started
    outcome = decoded.kode if isinstance(decoded, FileRejected) else f"{decoded.instructions.height} instructions read"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put((len(data), outcome, seconds, before / 1024, peak / 1024))


def main() -> None:
    print(f"{'case':<24} {'size':>8} {'outcome':<28} {'time':>7} {'RSS with the file':>18} {'peak RSS':>9}")
    for name in CASES:
        queue = multiprocessing.get_context("spawn").Queue()
        process = multiprocessing.get_context("spawn").Process(target=_measure, args=(name, queue))
        process.start()
        size, outcome, seconds, before, peak = queue.get()
        process.join()
        print(f"{name:<24} {size / 1e6:>6.1f}MB {outcome:<28} {seconds:>6.1f}s {before:>16.0f}MB {peak:>7.0f}MB")


if __name__ == "__main__":
    main()
