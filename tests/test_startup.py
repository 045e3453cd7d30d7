"""Start-up costs: `optbench train --help` does not import torch, and a run that wants neither
determinism nor compile does not import dynamo/inductor (torch.use_deterministic_algorithms does)."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from optbench import PACKAGE_DIR

PROBE = """
import sys
import optbench.cli, optbench.commands.train
assert "torch" not in sys.modules, "the train verb's module imports torch before it is needed"
from optbench.train.loop import seed_everything
seed_everything(0, False)
print(",".join(m for m in ("torch._dynamo", "torch._inductor") if m in sys.modules) or "none")
"""


def test_help_path_skips_torch_and_a_plain_run_skips_inductor():
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_DIR.parent)}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "none"


def test_deterministic_mode_is_reset_for_the_next_job_of_a_multirun():
    import torch._inductor.config as inductor_config

    from optbench.train.loop import seed_everything

    try:
        seed_everything(0, True)
        assert torch.are_deterministic_algorithms_enabled() and inductor_config.deterministic
        assert torch.backends.cudnn.deterministic
        seed_everything(1, False)  # the next job in the same process
        assert not torch.are_deterministic_algorithms_enabled() and not inductor_config.deterministic
        assert not torch.backends.cudnn.deterministic
        seed_everything(2, False)
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
