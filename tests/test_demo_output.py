"""`make demo` leaves the checkout clean: its report goes to a git-ignored folder, and the tracked
results/demo/ is rewritten only by `make demo-results`. (A demo that rewrote tracked files made every
later run record git_commit ...-dirty.)"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(
    shutil.which("make") is None or shutil.which("git") is None, reason="needs make and git"
)


def report_outputs(target: str) -> list[Path]:
    """The folders `optbench report` writes for `make <target>`, from make's dry run."""
    out = subprocess.run(
        ["make", "-n", "-C", str(ROOT), target, "VENV=.venv"], capture_output=True, text=True, check=True
    ).stdout
    folders = []
    for line in out.splitlines():
        args = shlex.split(line)
        if len(args) > 1 and args[0].endswith("optbench") and args[1] == "report":
            name = args[args.index("--name") + 1]
            parent = args[args.index("--out") + 1] if "--out" in args else "results"  # report's default
            folders.append(ROOT / parent / name)
    assert folders, out
    return folders


def ignored(path: Path) -> bool:
    probe = path / "table.md"
    return subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", str(probe)]).returncode == 0


def test_make_demo_writes_its_report_outside_tracked_files():
    folders = report_outputs("demo")
    assert all(ignored(f) for f in folders), folders
    assert all("results" not in f.relative_to(ROOT).parts for f in folders)


def test_make_demo_results_refreshes_the_tracked_copy():
    folders = report_outputs("demo-results")
    assert ROOT / "results" / "demo" in folders and not ignored(ROOT / "results" / "demo")
