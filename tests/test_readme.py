"""The README's promise (issue 2, item 1): its first two code blocks are the two commands a new
user copies as they stand, (1) set up and run the demo, (2) run the tests; `.ci/run` runs that same
test command. The commands are not run here (running the tests from the tests would recurse, and the
demo has its own test): their shape is checked, and what they rely on is checked to exist."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def code_blocks() -> list[list[str]]:
    """The README's fenced code blocks, in order, each as its non-empty lines."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return [[line for line in block.splitlines() if line.strip()] for block in FENCE.findall(text)]


def commands(line: str) -> list[list[str]]:
    """A shell line split into its `&&`-chained commands, each as words."""
    words = shlex.split(line)
    chained: list[list[str]] = [[]]
    for word in words:
        if word == "&&":
            chained.append([])
        else:
            chained[-1].append(word)
    return chained


def script_lines(path: Path) -> list[str]:
    """The lines of a shell script that do something (no comments, no blank lines)."""
    return [
        line.strip()
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def test_the_first_two_code_blocks_are_one_line_each():
    blocks = code_blocks()
    assert len(blocks) >= 2, "the README needs at least two code blocks"
    assert [len(block) for block in blocks[:2]] == [1, 1], blocks[:2]


def test_the_first_command_makes_dot_venv_installs_and_runs_the_demo():
    (line,) = code_blocks()[0]
    steps = commands(line)
    assert len(steps) == 3, f"expected venv && install && demo, got {steps}"
    venv, install, demo = steps

    # 1. The virtual environment `.venv/` at the repository root (the command runs from the root).
    assert venv[-3:] == ["-m", "venv", ".venv"] and venv[0].startswith("python3"), venv
    # 2. Installs the project itself into that environment, pinned by a lock file that exists.
    assert install[0] == ".venv/bin/pip" and install[1] == "install", install
    assert "-e" in install and install[install.index("-e") + 1] == ".", install
    if "-c" in install:
        lock = ROOT / install[install.index("-c") + 1]
        assert lock.is_file(), f"{lock} is named by the README but missing"
        assert re.search(r"^dagster==1\.13\.", lock.read_text(), re.MULTILINE), "dagster 1.13.x is pinned"
    # 3. Runs the demo through the console command the project installs.
    assert demo == [".venv/bin/pensionstraek", "demo"], demo
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts.get("pensionstraek") == "pipelines.cli:command"


def test_the_second_command_runs_the_tests():
    (line,) = code_blocks()[1]
    assert shlex.split(line) == ["bash", "tests/run.sh"]
    assert (ROOT / "tests" / "run.sh").is_file()


def test_ci_runs_the_same_test_command():
    (line,) = code_blocks()[1]
    readme_command = shlex.split(line)
    ci = ROOT / ".ci" / "run"
    runs = [shlex.split(l) for l in script_lines(ci)]
    calls = [words for words in runs if words[: len(readme_command)] == readme_command]
    assert len(calls) == 1, f".ci/run must call `{line}` once, found {runs}"
    # Extra words may only be pytest options (e.g. -q), never a different selection of tests.
    extra = calls[0][len(readme_command):]
    assert all(word.startswith("-") and word not in ("-k", "-m", "--deselect") for word in extra), extra
    # A failing test fails CI: the script stops on the first failing command.
    assert any(l.startswith("set -") and "e" in l.split()[1] for l in script_lines(ci)), "no `set -e` in .ci/run"


@pytest.mark.parametrize("script", ["tests/run.sh", ".ci/run"])
def test_the_scripts_are_valid_bash(script):
    if shutil.which("bash") is None:  # pragma: no cover - bash is on every machine of the project
        pytest.fail("bash is missing")
    result = subprocess.run(["bash", "-n", str(ROOT / script)], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_test_command_installs_the_real_parts_when_missing_then_runs_pytest():
    lines = script_lines(ROOT / "tests" / "run.sh")
    text = "\n".join(lines)

    # The environment the README's first command makes, with the test extras (pytest, hypothesis).
    assert re.search(r"python3 -m venv \.venv", text)
    install = next(l for l in lines if " pip install" in l)
    assert ".[test]" in install and "-e" in shlex.split(install), install
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    assert any(e.startswith("pytest") for e in extras)

    # Each Debian package only when the binary the tests start is missing, then one apt-get.
    for binary, package in [
        ("/usr/sbin/sshd", "openssh-server"),
        ("/usr/lib/postgresql/*/bin/initdb", "postgresql"),
        ("/usr/sbin/rabbitmq-server", "rabbitmq-server"),
        ("/usr/bin/chromium", "chromium"),
    ]:
        guard = next(l for l in lines if binary in l)
        assert f"missing+=({package})" in guard, guard
    apt = next(i for i, l in enumerate(lines) if "apt-get install" in l)
    assert '"${missing[@]}"' in lines[apt]
    assert any("apt-get update" in l for l in lines[:apt]), "apt-get update runs before the install"

    # And last, pytest in that environment, with the caller's arguments (.ci/run passes -q).
    assert re.fullmatch(r'(exec )?\.venv/bin/python -m pytest "\$@"', lines[-1]), lines[-1]
