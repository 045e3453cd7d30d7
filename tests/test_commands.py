"""One home per verb: each `optbench <verb>` is optbench.commands.<verb>.main (cli.VERBS), and
`python -m optbench` is the same command line as `optbench`."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

from optbench import PACKAGE_DIR
from optbench.cli import VERBS


@pytest.mark.parametrize("verb", list(VERBS))
def test_every_verb_names_a_main_that_exists(verb):
    module, func = VERBS[verb][0].split(":")
    assert callable(getattr(importlib.import_module(module), func))


def python_m(*args):
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_DIR.parent)}
    return subprocess.run(
        [sys.executable, "-m", "optbench", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_python_m_optbench_is_the_cli():
    r = python_m("--help")
    assert r.returncode == 0 and all(verb in r.stdout for verb in VERBS), r.stderr
    r = python_m("list", "schedulers")
    assert r.returncode == 0 and r.stdout.startswith("schedulers:\n") and "cosine" in r.stdout, r.stderr
    r = python_m("nosuchverb")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"optbench: error: unknown verb 'nosuchverb'; valid verbs: {', '.join(VERBS)}"
    ]
