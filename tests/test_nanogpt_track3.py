"""experiment=nanogpt_track3 and its rows: the protocol pieces on our side, each against values worked
out here by hand (the reference itself is compared by scripts/fidelity_nanogpt.py, not in tests):
evaluation cadence, the lr schedule's values, the data order and shard rule, the presets, init_from."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from optbench.config import amp_mode
from optbench.data.token_loader import TokenLoader
from optbench.data.token_shards import write_shard
from optbench.errors import ConfigError
from optbench.schedules import build_schedule
from optbench.train.cadence import eval_due


# --------------------------------------------------------------------------- evaluation cadence
def test_cadence_125_then_25_in_the_last_tenth_and_at_both_ends():
    steps = [s for s in range(3251) if eval_due(s, 3250, 125, 25, 0.9, True)]
    # 0, 125, ..., 2875 (2875/3250 = 0.885 < 0.9), then from 2925 (= 0.9 x 3250) every 25, and 3250
    early = list(range(0, 2926, 125))
    late = list(range(2925, 3251, 25))
    assert steps == sorted(set(early + late))
    assert 2900 not in steps and 2925 in steps and 3000 in steps and steps[-1] == 3250
    assert len(steps) == 38


def test_cadence_without_late_period_or_start():
    assert [s for s in range(11) if eval_due(s, 10, 4)] == [4, 8, 10]
    assert [s for s in range(11) if eval_due(s, 10, 4, None, 0.5, True)] == [0, 4, 8, 10]
    assert [s for s in range(11) if eval_due(s, 10, 4, 2, 0.5)] == [4, 6, 8, 10]


def test_loop_evaluates_at_start_and_late(run_train):
    summary, run_dir = run_train(
        [
            "task=fineweb_synthetic",
            "trainer.batch_size=4",
            "trainer.max_steps=6",
            "trainer.eval_every=4",
            "trainer.eval_every_late=1",
            "trainer.eval_late_fraction=0.8",
            "trainer.eval_at_start=true",
            "model.n_layer=1",
            "model.n_embd=32",
            "model.n_head=2",
            "trainer.log_every=3",
            "task.val_tokens=2048",
        ]
    )
    evals = [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["type"] == "eval"]
    assert [r["step"] for r in evals] == [0, 4, 5, 6]  # late from step 5: 5/6 >= 0.8
    assert evals[0]["time_s"] == 0.0 and summary["benchmark"] is None and summary["loss_reduction"] == "mean"


def test_the_loop_cadence_read_once_from_the_config_keeps_every_rule(make_cfg):
    from optbench.train.cadence import Cadence

    cfg = make_cfg(["trainer.max_steps=40", "trainer.log_every=7", "trainer.eval_every=10", "trainer.eval_every_late=3",
                    "trainer.eval_late_fraction=0.75", "trainer.eval_at_start=true", "trainer.checkpoint_every=15"])  # fmt: skip
    c = Cadence.of(cfg.trainer)
    assert [s for s in range(41) if c.eval_due(s)] == [0, 10, 20, 30, 33, 36, 39, 40]
    # logged after steps 1, 7, 14, ... and the last
    assert [s for s in range(40) if c.log_due(s)] == [0, 6, 13, 20, 27, 34, 39]
    # periodic only: the final checkpoint is the run's end
    assert [s for s in range(41) if c.checkpoint_due(s)] == [0, 15, 30]
    assert not Cadence.of(make_cfg(["trainer.checkpoint_every=0"]).trainer).checkpoint_due(0)


def test_bad_cadence_values_are_one_line(make_cfg):
    from optbench.config import validate

    with pytest.raises(ConfigError, match="trainer.eval_every_late=0 is invalid"):
        validate(make_cfg(["trainer.eval_every_late=0"]))
    with pytest.raises(ConfigError, match="trainer.eval_late_fraction=1.5 is invalid"):
        validate(make_cfg(["trainer.eval_late_fraction=1.5"]))
    with pytest.raises(ConfigError, match="trainer.init_from='/no/such.pt' is not a file"):
        validate(make_cfg(["trainer.init_from=/no/such.pt"]))


# --------------------------------------------------------------------------- the lr schedule
def test_schedule_flat_then_linear_to_zero_over_the_last_70_percent():
    f = build_schedule(
        "wsd", 3250, decay_fraction=0.7, decay_shape="linear", min_ratio=0.0, end_at="after_run"
    )  # the reference's end convention
    assert f(0) == f(974) == f(975) == 1.0  # 975 = 0.3 x 3250: still the flat part
    assert f(976) == (1 - 976 / 3250) / 0.7  # then (1 - t/T) / 0.7, computed that way
    assert f(2000) == (1 - 2000 / 3250) / 0.7
    assert f(3249) == (1 - 3249 / 3250) / 0.7 and f(3249) > 0  # the last trained step; 0 only at T
    assert f(3250) == 0.0


# --------------------------------------------------------------------------- the data order
def _shards(tmp_path, lengths):
    rng = np.random.default_rng(0)
    paths = [
        write_shard(tmp_path / f"fineweb_train_{i:06d}.bin", rng.integers(0, 50000, n))
        for i, n in enumerate(lengths, 1)
    ]
    return paths, [np.fromfile(p, dtype="<u2", offset=1024) for p in paths]


def test_modded_order_gives_each_rank_a_contiguous_share(tmp_path):
    # 8 rows of 4 tokens per step, 2 ranks x 2 micro-batches of 2 rows
    paths, tokens = _shards(tmp_path, [1000])
    for rank in (0, 1):
        loader = TokenLoader(paths, 8, 4, 2, rank, 2, order="modded_nanogpt")
        for step in range(3):
            micro = next(loader)
            for j, (x, y) in enumerate(micro):
                start = step * 32 + rank * 16 + j * 8  # step window, rank's half, micro-batch in it
                assert x.flatten().tolist() == tokens[0][start : start + 8].tolist()
                assert y.flatten().tolist() == tokens[0][start + 1 : start + 9].tolist()
    interleaved = TokenLoader(paths, 8, 4, 2, 1, 2)
    first = next(interleaved)
    assert first[0][0].flatten().tolist() == tokens[0][8:16].tolist()  # rank 1, micro 0: slice 0 x 2 + 1


def test_modded_order_leaves_a_shard_one_token_early(tmp_path):
    # shard 1 holds exactly 3 windows + 1 token: interleaved uses the third window there, the reference
    # rule (pos + window + 1 >= len) moves to shard 2 instead
    window = 8 * 4
    paths, tokens = _shards(tmp_path, [3 * window + 1, 5 * window])
    modded = TokenLoader(paths, 8, 4, 1, order="modded_nanogpt")
    plain = TokenLoader(paths, 8, 4, 1)
    for _ in range(2):
        next(modded), next(plain)
    third_modded, third_plain = next(modded), next(plain)
    assert third_plain[0][0].flatten().tolist() == tokens[0][2 * window : 3 * window].tolist()
    assert third_modded[0][0].flatten().tolist() == tokens[1][:window].tolist()
    assert modded.state_dict() == {"epoch": 0, "shard": 1, "offset": window}


def test_bad_order_is_one_line(tmp_path, make_cfg):
    from optbench.config import validate

    paths, _ = _shards(tmp_path, [100])
    with pytest.raises(ConfigError, match="data.order='random' is invalid; valid choices: interleaved, modded_nanogpt"):
        TokenLoader(paths, 2, 4, 1, order="random")
    with pytest.raises(ConfigError, match="data.order='random' is invalid"):
        validate(make_cfg(["task=fineweb_synthetic", "data.order=random"]))


# --------------------------------------------------------------------------- presets
PRESETS = {
    "nanogpt_track3": 3250,
    "nanogpt_track3_r1_muon": 3600,
    "nanogpt_track3_r2_adam_approx": 5625,
    "nanogpt_track3_r22_spectral": 8500,
}


@pytest.mark.parametrize("name,steps", PRESETS.items())
def test_presets_fix_the_benchmark_protocol(make_cfg, name, steps):
    cfg = make_cfg([f"experiment={name}"])
    assert cfg.trainer.max_steps == steps and cfg.task.benchmark == "nanogpt_track3"
    assert cfg.trainer.batch_size * cfg.task.seq_len == 524_288 and cfg.task.seq_len == 1024
    assert cfg.trainer.batch_size // cfg.trainer.grad_accum == 64  # the reference's micro-batch, one GPU
    assert cfg.task.val_tokens == 10_485_760 and cfg.task.target == 3.28 and not cfg.trainer.stop_at_target
    assert cfg.task.loss_reduction == "sum" and cfg.data.order == "modded_nanogpt"
    assert amp_mode(cfg.trainer.amp) == "off"
    assert cfg.model.name == "gpt_track3" and (
        cfg.model.n_layer,
        cfg.model.n_embd,
        cfg.model.head_dim,
        cfg.model.vocab_size,
    ) == (12, 768, 128, 50304)
    assert cfg.trainer.eval_every == 125 and cfg.trainer.eval_at_start
    assert cfg.trainer.eval_every_late == (25 if name in ("nanogpt_track3", "nanogpt_track3_r22_spectral") else None)


def test_baseline_optimizer_block_is_result_36(make_cfg):
    o = make_cfg(["experiment=nanogpt_track3"]).optimizer
    assert (o.name, o.lr, o.momentum, o.nesterov, o.momentum_form, list(o.ns_coefficients), o.ns_steps) == (
        "muon",
        0.025,
        0.95,
        True,
        "lerp",
        [2, -1.5, 0.5],
        12,
    )
    assert (o.ns_norm, o.eps, o.ns_dtype, o.scale_rule, o.weight_decay) == ("add", 1e-7, "bf16", "original", 0.05)
    assert dict(o.fallback) == {
        "name": "adamw",
        "lr": 0.015,
        "betas": [0.8, 0.95],
        "eps": 1e-10,
        "weight_decay": 0.001,
        "fused": True,
    }
    assert o.groups.embedding.lr == 0.7 and o.groups.head.lr == 0.004
    assert all(o.groups[r].weight_decay is True for r in ("matrix", "embedding", "head", "scalar"))


def test_small_cpu_form_validates(make_cfg):
    from optbench.config import validate

    validate(
        make_cfg(
            [
                "experiment=nanogpt_track3",
                "task=fineweb_synthetic",
                "model.n_layer=2",
                "model.n_embd=256",
                "model.vocab_size=1024",
                "task.seq_len=64",
                "task.val_tokens=65536",
                "trainer.batch_size=8",
                "trainer.grad_accum=1",
                "trainer.compile=false",
            ]
        )
    )


# --------------------------------------------------------------------------- trainer.init_from
def test_trainer_init_from_loads_before_the_optimizer(make_cfg, tmp_path):
    from optbench.models import build_model
    from optbench.train.loop import Trainer

    overrides = [
        "task=fineweb_synthetic",
        "model=gpt_track3",
        "model.n_layer=1",
        "model.n_embd=32",
        "model.head_dim=8",
        "model.vocab_size=64",
        "trainer.batch_size=4",
        "trainer.device=cpu",
    ]
    torch.manual_seed(123)
    src = build_model(
        {"name": "gpt_track3", "vocab_size": 64, "n_layer": 1, "n_embd": 32, "head_dim": 8, "max_seq_len": 64}
    )
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.randn_like(p.float()).to(p.dtype))
    torch.save(src.state_dict(), tmp_path / "w.pt")
    tr = Trainer(make_cfg([*overrides, f"trainer.init_from={tmp_path / 'w.pt'}"]), tmp_path / "run")
    for (n, a), b in zip(src.state_dict().items(), tr.model.state_dict().values()):
        assert torch.equal(a, b), n
    # the optimizer holds the loaded tensors themselves
    assert {id(p) for g in tr.optimizer.param_groups for p in g["params"]} == {id(p) for p in tr.model.parameters()}


def test_small_cpu_form_trains(run_train):
    summary, run_dir = run_train(
        [
            "experiment=nanogpt_track3",
            "task=fineweb_synthetic",
            "model.n_layer=1",
            "model.n_embd=128",
            "model.vocab_size=64",
            "task.seq_len=16",
            "task.val_tokens=1024",
            "task.target=null",
            "trainer.max_steps=3",
            "trainer.batch_size=4",
            "trainer.grad_accum=2",
            "trainer.compile=false",
            "trainer.device=cpu",
            "trainer.log_every=1",
        ]
    )
    assert summary["status"] == "completed" and summary["benchmark"] == "nanogpt_track3"
    assert summary["loss_reduction"] == "sum"
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in lines if r["type"] == "eval"]
    assert [r["step"] for r in evals] == [0, 3]
    assert evals[0]["val_loss"] == pytest.approx(np.log(64), rel=1e-6)  # zero output projection: uniform
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
