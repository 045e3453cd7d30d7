"""scripts/bench_overhead.py: data under a cache directory (never data/ in the working directory),
both loops fed by the task's pipeline."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from optbench import PACKAGE_DIR

SCRIPT = PACKAGE_DIR.parent / "scripts" / "bench_overhead.py"


def load_script():
    spec = importlib.util.spec_from_file_location("bench_overhead", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_overhead_writes_its_data_to_a_cache_not_the_checkout(tmp_path, monkeypatch, capsys):
    bench = load_script()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPTBENCH_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert bench.bench_data_root() == tmp_path / "cache" / "optbench" / "bench"
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "bench_overhead.py",
            "--steps",
            "3",
            "--rounds",
            "1",
            "trainer.progress=false",
            "trainer.batch_size=16",
            "data.n_train=128",
            "data.n_test=32",
            "model.widths=[4,8,8]",
        ],
    )
    bench.main()
    out = capsys.readouterr().out
    assert "overhead ratio" in out
    assert not (tmp_path / "data").exists()
    assert (tmp_path / "cache" / "optbench" / "bench" / "cifar10_synthetic").is_dir()
    monkeypatch.setenv("OPTBENCH_DATA", str(tmp_path / "mine"))
    assert bench.bench_data_root() == Path(tmp_path / "mine")


def test_bare_loop_draws_its_steps_from_the_stream():
    import torch

    bench = load_script()
    model = torch.nn.Linear(3, 2)
    drawn = []

    def stream():
        for i in range(100):
            drawn.append(i)
            yield [(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))]

    loss = lambda m, b: torch.nn.functional.cross_entropy(m(b[0]), b[1])  # noqa: E731
    bench.bare_loop(model, torch.optim.SGD(model.parameters(), lr=0.1), loss, stream(), 5, torch.device("cpu"))
    assert drawn == [0, 1, 2, 3, 4]  # the pipeline runs inside the timed loop, one batch per step
