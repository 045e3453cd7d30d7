"""Shared fixtures: composed configs, a temporary data root, quiet runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Tiny models on 2 shared cores (pytest -n 2): a second intra-op thread costs more than it gives, and
# CPU float results can depend on the thread count, so tests and their subprocesses use one thread.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """One data directory for the whole session (synthetic datasets are generated once)."""
    root = tmp_path_factory.mktemp("data")
    os.environ["OPTBENCH_DATA"] = str(root)
    return root


@pytest.fixture
def make_cfg(data_root):
    """make_cfg(["optimizer=sgd", ...]) -> the composed DictConfig `optbench train` would run,
    quiet and small by default."""
    from optbench.config import compose

    def _make(overrides=(), quiet: bool = True):
        base = ["trainer.progress=false"] if quiet else []
        cfg = compose([*base, *overrides])
        from omegaconf import open_dict

        with open_dict(cfg):
            cfg.pop("hydra", None)
        return cfg

    return _make


@pytest.fixture
def run_train(make_cfg, tmp_path):
    """run_train([...overrides], run_dir=None) -> (summary, run_dir): the loop, in-process."""
    from optbench.train import train

    def _run(overrides=(), run_dir=None):
        cfg = make_cfg(overrides)
        run_dir = Path(run_dir or tmp_path / "run")
        return train(cfg, run_dir), run_dir

    return _run


def optbench_cli(*args, env=None, cwd=None, timeout=600):
    """Run the installed `optbench` console script as a user would."""
    import subprocess
    import sys
    import tempfile

    exe = Path(sys.executable).with_name("optbench")
    cwd = cwd or tempfile.mkdtemp(prefix="optbench-cli-")  # Hydra's outputs/ never land in the repo
    full_env = {**os.environ, "WANDB_MODE": "disabled", **(env or {})}
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout)
