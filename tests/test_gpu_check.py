"""scripts/gpu_check.sh up to the point of needing CUDA: its data in the real formats, the reference
copies it patches, the figures it reads back from each side's own output, and its CPU smoke run.
The fake reference files here are stand-ins holding only the lines the script patches."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "gpu_check.sh"

spec = importlib.util.spec_from_file_location("gpu_check_tools", REPO / "scripts" / "gpu_check_tools.py")
tools = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tools)


def fake_reference(root: Path, gpt_line="    train_steps = 3250") -> Path:
    gpt = root / "modded-nanogpt" / "records" / "track_3_optimization" / "train_gpt_simple.py"
    gpt.parent.mkdir(parents=True)
    gpt.write_text(f"for _ in range(1):\n{gpt_line}\n    print(train_steps)\n")
    air = root / "cifar10-airbench" / "airbench94_muon.py"
    air.parent.mkdir(parents=True)
    air.write_text(
        "def main(run, model):\n    total_train_steps = ceil(8 * len(train_loader))\n"
        "if True:\n    accs = torch.tensor([main(run, model) for run in range(200)])\n"
    )
    return root


def run_script(*args, env=None, timeout=240) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHON": sys.executable, **(env or {})}
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, env=full_env, timeout=timeout, cwd=REPO
    )


def test_dry_run_writes_the_real_formats_and_patches_the_reference_copies(tmp_path):
    from optbench.data.cifar10 import read_cifar10
    from optbench.data.token_shards import read_shard

    out = tmp_path / "out"
    ref = fake_reference(tmp_path / "ref")
    r = run_script("--out", str(out), "--dry-run", "--steps", "20", "--reference", str(ref))
    assert r.returncode == 0, r.stderr + r.stdout
    shards = out / "data" / "fineweb10B"
    val, train = read_shard(shards / "fineweb_val_000000.bin"), read_shard(shards / "fineweb_train_000001.bin")
    assert len(val) == 1024 + 128 and len(train) == (20 + 4) * 512 + 1  # tiny sizes: 8 rows x 64 tokens a step
    assert int(train.max()) < 1024 and len(np.unique(train)) > 900  # uniform random tokens over the vocabulary
    arrays = read_cifar10(out / "data" / "cifar10")  # the python-batch files, read by task=cifar10's reader
    assert tuple(arrays.train_images.shape) == (200, 3, 32, 32) and len(arrays.test_labels) == 100
    ref_train = torch.load(out / "ref_cifar" / "cifar10" / "train.pt")
    assert ref_train["images"].dtype == torch.uint8 and tuple(ref_train["images"].shape) == (200, 32, 32, 3)
    assert torch.equal(ref_train["images"].permute(0, 3, 1, 2), arrays.train_images)  # the same images
    assert torch.equal(ref_train["labels"], arrays.train_labels) and len(ref_train["classes"]) == 10
    links = sorted(p.name for p in (out / "ref_gpt" / "data" / "fineweb10B").iterdir())
    assert links == ["fineweb_train_000001.bin", "fineweb_val_000000.bin"]
    assert "    train_steps = 20  # gpu_check: was 3250" in (out / "ref_gpt" / "train_gpt_simple.py").read_text()
    air = (out / "ref_cifar" / "airbench94_muon.py").read_text()
    assert "ceil(2 * len(train_loader))" in air and "for run in range(1)]" in air
    # the commands it would run
    assert "experiment=nanogpt_track3" in r.stdout and "experiment=airbench94_muon" in r.stdout
    assert "trainer.max_steps=20" in r.stdout
    assert "-m torch.distributed.run --standalone --nproc_per_node=1 train_gpt_simple.py" in r.stdout
    assert json.loads((out / "meta.json").read_text())["steps"] == 20


def test_a_changed_reference_is_refused(tmp_path):
    r = run_script(
        "--out",
        str(tmp_path / "out"),
        "--dry-run",
        "--reference",
        str(fake_reference(tmp_path / "ref", gpt_line="    train_steps = 4000")),
    )
    assert r.returncode != 0 and "does not contain the line 'train_steps = 3250'" in r.stderr


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--out"], "--out needs a value"),
        ([], "--out DIR is required"),
        (["--out", "x", "--bogus"], "unknown argument '--bogus'"),
        (["--out", "x", "--steps", "5"], "--steps 5 is invalid"),
        (["--out", "x", "--reference", "/nonexistent"], "not found"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args, needle, tmp_path):
    r = run_script(*[a if a != "x" else str(tmp_path / "x") for a in args], timeout=30)
    assert r.returncode == 2 and needle in r.stderr and r.stderr.count("\n") == 1, r.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_the_gpu_mode_says_so(tmp_path):
    r = run_script("--out", str(tmp_path / "x"), timeout=60)
    assert r.returncode == 2 and "no CUDA device; use --cpu-smoke" in r.stderr


# ------------------------------------------------------------------ reading the figures back


def test_reference_gpt_log_gives_the_steady_tokens_per_second(tmp_path):
    log = tmp_path / "ref.log"
    lines = ["logs/x.txt", "step:0/20 val_loss:10.8 train_time:0.000s step_avg:nanms"]
    lines += [f"step:{k}/20 train_time:{30 + 2 * (k - 1):.3f}s step_avg:1.00ms" for k in range(1, 21)]
    lines += ["step:20/20 val_loss:7.1 train_time:68.500s step_avg:3400.00ms"]  # after a barrier: exact
    log.write_text("\n".join(lines) + "\n")
    r = tools.ref_gpt(log, skip_steps=10, tokens_per_step=524288)
    # from step 10 (t=48) to step 20 (t=68.5, the synced value): 10 steps in 20.5 s
    assert r["steps_measured"] == 10 and r["tokens_per_s"] == pytest.approx(10 * 524288 / 20.5)


def test_reference_cifar_table_gives_seconds_per_epoch(tmp_path):
    log = tmp_path / "ref.log"
    head = "|  run     |  epoch  |  train_acc  |  val_acc  |  tta_val_acc  |  time_seconds  |"
    log.write_text(
        "\n".join(
            [
                "-" * len(head),
                head,
                "-" * len(head),
                "|  warmup  |      0  |     0.1000  |   0.1000  |               |       30.0000  |",
                "|          |      1  |     0.1000  |   0.1000  |               |       31.0000  |",
                "|          |   eval  |             |           |       0.1000  |       32.0000  |",
                "|       0  |      0  |     0.8000  |   0.8000  |               |        0.5000  |",
                "|          |      1  |     0.9000  |   0.9000  |               |        0.9000  |",
                "|          |   eval  |             |           |       0.9100  |        1.0000  |",
            ]
        )
        + "\n"
    )
    r = tools.ref_cifar(log)
    assert r["runs_seen"] == 2 and r["epoch_seconds"] == pytest.approx([0.5, 0.4])
    assert r["seconds_per_epoch"] == pytest.approx(0.4)
    # stopped at its time limit inside the warm-up run: no figure rather than the compile's
    log.write_text("\n".join(log.read_text().splitlines()[:5]) + "\n")
    r = tools.ref_cifar(log)
    assert r["runs_seen"] == 1 and r["epoch_seconds"] == [] and math.isnan(r["seconds_per_epoch"])


def write_metrics(run: Path, lines: list[dict], summary: dict | None = None) -> None:
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"type": "tr')
    (run / "summary.json").write_text(json.dumps(summary or {"status": "completed"}))


def test_ours_gpt_and_cifar_and_the_ratios(tmp_path):
    tok = 1000
    gpt = [
        {"type": "train", "step": s, "tokens": s * tok, "time_s": 5 + 0.5 * s, "tok_per_s": 2000.0, "mfu": 0.4}
        for s in (1, 5, 10, 15, 20)
    ]
    write_metrics(tmp_path / "g", gpt)
    og = tools.ours_gpt(tmp_path / "g", skip_steps=10)
    assert og["tokens_per_s"] == pytest.approx(10 * tok / 5.0) and og["mfu"] == pytest.approx(0.4)
    cifar = [{"type": "train", "step": s, "time_s": t} for s, t in ((1, 0.2), (25, 3.0), (50, 5.0), (75, 7.2))]
    write_metrics(tmp_path / "c", cifar)
    oc = tools.ours_cifar(tmp_path / "c", steps_per_epoch=25)
    assert oc["epoch_seconds"] == pytest.approx([3.0, 2.0, 2.2]) and oc["seconds_per_epoch"] == pytest.approx(2.1)
    out = tmp_path / "out"
    out.mkdir()
    for name, d in (
        ("ours_gpt", og),
        ("ours_cifar", oc),
        ("ref_gpt", {"tokens_per_s": 1600.0}),
        ("ref_cifar", {"seconds_per_epoch": 1.4}),
        (
            "meta",
            {
                "device": "NVIDIA H200",
                "steps": 20,
                "skip": 10,
                "epochs": 3,
                "notes": {"reference airbench94_muon.py": "skipped: torchvision is not installed"},
            },
        ),
    ):
        (out / f"{name}.json").write_text(json.dumps(d))
    text = tools.summary(out)
    assert "| nanogpt_track3 tokens/s (20 steps, steady after step 10) | 2,000 | 1,600 | 1.250 |" in text
    assert "| nanogpt_track3 MFU | 0.400 | 0.320 | 1.250 |" in text  # the reference at our FLOPs per token
    assert "| airbench94_muon seconds per epoch (3 epochs) | 2.100 | 1.400 | 1.500 |" in text
    assert "- reference airbench94_muon.py: skipped: torchvision is not installed" in text
    assert (out / "gpu_check.md").read_text() == text
    assert math.isnan(tools._ratio(1.0, math.nan))


# ------------------------------------------------------------------ the CPU smoke run


@pytest.mark.slow
def test_cpu_smoke_runs_both_presets_and_reports(tmp_path):
    """Tiny sizes on the CPU through the same commands and the real presets."""
    env = {"OMP_NUM_THREADS": "1"}
    out = tmp_path / "smoke"
    r = run_script("--out", str(out), "--cpu-smoke", "--steps", "11", "--epochs", "1", env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    og = json.loads((out / "ours_gpt.json").read_text())
    oc = json.loads((out / "ours_cifar.json").read_text())
    assert og["status"] == "completed" and og["steps_done"] == 11 and og["tokens_per_s"] > 0
    assert oc["seconds_per_epoch"] > 0 and len(oc["epoch_seconds"]) == 1
    assert "| nanogpt_track3 tokens/s (11 steps" in (out / "gpu_check.md").read_text()
