"""The language-model task through the one loop: the tiny GPT reaches the Markov source's entropy
floor, the real FineWeb file layout trains, MFU is reported, and bad configs are one line."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from optbench.data.markov import MarkovSource
from optbench.data.token_shards import write_shard
from optbench.errors import ConfigError

# The convergence claim of task=fineweb_synthetic: excess loss over the exact entropy floor
# (1.090 nats/token for the default source; ln 64 = 4.159 at init) after 150 steps.
EXCESS_MARGIN = 0.05


@pytest.fixture
def one_thread():
    """The tiny GPT runs fastest single-threaded, especially on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_tiny_gpt_reaches_the_markov_entropy_floor(run_train, one_thread):
    summary, run_dir = run_train(
        [
            "task=fineweb_synthetic",
            "scheduler=cosine",
            "optimizer.lr=1e-2",
            "trainer.max_steps=150",
            "trainer.batch_size=32",
            "trainer.eval_every=150",
        ]
    )
    floor = MarkovSource.random(64, 4, 1234).entropy_rate()  # the source the config describes
    assert summary["status"] == "completed"
    assert summary["entropy_floor"] == pytest.approx(floor, abs=1e-12)
    assert summary["val_floor_empirical"] == pytest.approx(floor, abs=0.02)
    excess = summary["final_eval"]["excess_loss"]
    assert excess == pytest.approx(summary["final_metric"] - floor, abs=1e-9)
    assert 0 < excess < EXCESS_MARGIN, f"excess loss {excess:.4f} over the floor {floor:.4f}"
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    first_train = next(r for r in lines if r["type"] == "train")
    assert first_train["loss"] == pytest.approx(math.log(64), abs=0.1)  # zero-init blocks: near uniform
    assert first_train["tokens"] == 32 * 64 and "tok_per_s" in first_train
    assert summary["tokens_seen"] == 150 * 32 * 64 and summary["val_tokens"] == 65536
    assert summary["mfu"] is None  # CPU: no known peak


@pytest.fixture
def fake_fineweb(tmp_path):
    """A directory laid out like the downloaded speedrun shards (small, real format)."""
    rng = np.random.default_rng(0)
    for name, n in (
        ("fineweb_val_000000.bin", 3000),
        ("fineweb_train_000001.bin", 4000),
        ("fineweb_train_000002.bin", 4000),
    ):
        write_shard(tmp_path / name, rng.integers(0, 500, n))
    return tmp_path


def test_fineweb_layout_trains_and_reports_mfu_from_the_configured_peak(run_train, fake_fineweb, one_thread):
    summary, run_dir = run_train(
        [
            "task=fineweb10B",
            f"data.root={fake_fineweb}",
            "model=gpt_tiny",
            "model.vocab_size=512",
            "data.vocab_size=500",
            "task.seq_len=32",
            "task.val_tokens=1024",
            "trainer.batch_size=16",
            "trainer.grad_accum=2",
            "trainer.max_steps=6",
            "trainer.log_every=3",
            "trainer.eval_every=6",
            "trainer.peak_flops=1e12",
        ]
    )
    assert summary["status"] == "completed" and summary["val_shard"] == "fineweb_val_000000.bin"
    assert summary["train_shards"] == 2 and summary["tokens_seen"] == 6 * 16 * 32
    expected = summary["throughput_tokens_per_s"] * summary["flops_per_token"] / 1e12
    assert summary["mfu"] == pytest.approx(expected, rel=1e-9)
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in lines if r["type"] == "train"]
    assert all(r["mfu"] == pytest.approx(r["tok_per_s"] * summary["flops_per_token"] / 1e12) for r in train)
    assert math.isfinite(summary["final_metric"])


def test_peak_flops_lookup(monkeypatch):
    from optbench.train.mfu import mfu, peak_flops

    cuda = torch.device("cuda", 0)
    for name, peak in (
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H200", 989e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("Tesla T4", None),
    ):
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None, n=name: n)
        assert peak_flops(None, cuda) == peak
    assert peak_flops(None, torch.device("cpu")) is None
    assert peak_flops(2e14, torch.device("cpu")) == 2e14
    with pytest.raises(ConfigError, match="trainer.peak_flops=-1"):
        peak_flops(-1, torch.device("cpu"))
    assert mfu(1000.0, 6e8, 1e12, world_size=2) == pytest.approx(1000 * 6e8 / 2e12)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["task.val_tokens=1000"], "task.val_tokens=1000 is invalid: must be a multiple of task.seq_len=64"),
        (["model.positions=alibi"], "model.positions='alibi' is invalid; valid choices: learned, rotary"),
        (["data.markov.successors=100"], "data.markov.successors=100 is invalid"),
        (["model.vocab_size=32"], "model.vocab_size=32 is smaller than the data's vocabulary (64)"),
        (["task.val_tokens=262144"], "more than the synthetic val shard holds"),
    ],
)
def test_bad_language_model_configs(make_cfg, overrides, message):
    from optbench.config import validate

    with pytest.raises(ConfigError) as e:
        validate(make_cfg(["task=fineweb_synthetic", *overrides]))
    assert message in str(e.value)


def test_missing_fineweb_data_points_at_the_download_command(make_cfg, tmp_path):
    from optbench.config import validate

    with pytest.raises(ConfigError, match="run `optbench data fineweb10B --root"):
        validate(make_cfg(["task=fineweb10B", f"data.root={tmp_path / 'absent'}"]))


@pytest.mark.parametrize(
    "experiment,optimizer,steps",
    [
        ("nanogpt_modernarch", "muon", 3200),
        ("nanogpt_modernarch_adamw", "adamw", 9536),
        ("nanogpt_small", "adamw", 2000),
    ],
)
def test_presets_compose_with_the_fixed_protocol(make_cfg, experiment, optimizer, steps):
    cfg = make_cfg([f"experiment={experiment}"])
    assert cfg.optimizer.name == optimizer and cfg.trainer.max_steps == steps
    assert cfg.task.seq_len == 1024 and cfg.task.val_tokens == 10_485_760 and cfg.task.metric == "val_loss"
    tokens = cfg.trainer.batch_size * cfg.task.seq_len
    if experiment.startswith("nanogpt_modernarch"):
        assert tokens == 524_288 and cfg.task.target == 3.28 and cfg.model.n_layer == 12
        assert cfg.model.n_embd == 768 and cfg.model.vocab_size == 50304


def test_resumed_run_sees_the_same_tokens(run_train, tmp_path, one_thread):
    """Stop after 4 steps with a checkpoint, run on to 8: the same as 8 steps straight. Were the loader
    position not restored, steps 5-8 would re-read the first tokens and the weights would differ."""
    base = [
        "task=fineweb_synthetic",
        "trainer.batch_size=8",
        "trainer.eval_every=4",
        "trainer.log_every=1",
        "optimizer.lr=1e-2",
    ]
    first, run_dir = run_train([*base, "trainer.max_steps=4", "trainer.save_final=true"], tmp_path / "resumed")
    assert first["steps"] == 4
    resumed, _ = run_train([*base, "trainer.max_steps=8", "trainer.extend=true"], run_dir)  # on purpose
    straight, _ = run_train([*base, "trainer.max_steps=8"], tmp_path / "straight")
    assert resumed["steps"] == 8 and resumed["tokens_seen"] == 8 * 8 * 64
    assert resumed["final_eval"] == straight["final_eval"]
