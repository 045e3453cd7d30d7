"""`tune` on a language-model task selects on a held-out slice of the val shard (select_loss over
task.select_tokens tokens after the reported val_tokens), never on the tokens it reports."""

from __future__ import annotations

import json

import pytest

# a tiny GPT on small synthetic shards: val shard of 4,096 tokens, 1,024 reported, 1,024 held out
FW_TINY = [
    "task=fineweb_synthetic",
    "trainer.batch_size=4",
    "trainer.max_steps=2",
    "trainer.eval_every=2",
    "model.n_layer=1",
    "model.n_embd=32",
    "model.n_head=2",
    "trainer.device=cpu",
    "task.seq_len=32",
    "task.val_tokens=1024",
    "data.markov.train_tokens=20000",
    "data.markov.val_tokens=4096",
    "data.markov.shard_tokens=20000",
]


def test_language_model_selection_slice_is_held_out_of_the_reported_tokens(run_train, tmp_path):
    """tune on FineWeb used to choose on val_loss, the very tokens the report scores. select_loss
    is the loss on the val shard's tokens AFTER the reported val_tokens + 1."""
    import torch

    from optbench.data.fineweb import _shard_sources
    from optbench.data.token_shards import find_shards, read_shard

    summary, run_dir = run_train([*FW_TINY, "task.select_tokens=1024", "trainer.save_final=true"])
    assert summary["status"] == "completed"
    assert summary["select_slice"] == [1025, 2050]
    ev = summary["final_eval"]
    assert ev["select_loss"] != ev["val_loss"]
    # recompute both losses from the shard with the saved model: disjoint slices, the stated offsets
    from omegaconf import OmegaConf

    from optbench.config import compose
    from optbench.data.fineweb import evaluate_language_model
    from optbench.models import build_model

    cfg = compose(FW_TINY)
    root, _, val_pattern, _ = _shard_sources(cfg)
    tokens = torch.from_numpy(read_shard(find_shards(root, val_pattern)[0])[:2050].astype("int64"))
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model_cfg.setdefault("max_seq_len", 32)
    model = build_model(model_cfg)
    from optbench.train.checkpoint import read_checkpoint

    model.load_state_dict(read_checkpoint(run_dir / "checkpoints" / "last.pt", torch.device("cpu"))["model"])
    model.eval()

    def loss(t):
        return evaluate_language_model(model, t[:-1].view(-1, 32), t[1:].view(-1, 32), 256)

    assert loss(tokens[:1025]) == pytest.approx(ev["val_loss"], rel=1e-5)
    assert loss(tokens[1025:2050]) == pytest.approx(ev["select_loss"], rel=1e-5)


def test_selection_slice_bad_values(make_cfg):
    from optbench.config import validate
    from optbench.errors import ConfigError

    with pytest.raises(ConfigError, match=r"task.select_tokens=100 is invalid: must be a multiple of task.seq_len=32"):
        validate(make_cfg([*FW_TINY, "task.select_tokens=100"]))
    with pytest.raises(ConfigError, match=r"task.select_tokens=3072 is more than the synthetic val shard holds"):
        validate(make_cfg([*FW_TINY, "task.select_tokens=3072"]))


def test_tune_on_a_language_model_selects_on_the_held_out_slice(tmp_path):
    from optbench.commands.tune import main
    from optbench.tune import base_settings

    overrides, metric, mode = base_settings(FW_TINY, None)
    assert (metric, mode) == ("select_loss", "min") and "task.select_tokens=1024" in overrides
    assert base_settings(FW_TINY, "select_loss")[1] == "select_loss"  # named explicitly: accepted too
    assert base_settings(FW_TINY, "val_loss")[1] == "val_loss"  # the old choice, only when asked for
    # a val shard with little room after the reported tokens: the slice is what fits, whole sequences
    short = base_settings([*FW_TINY, "task.val_tokens=3584"], None)[0]
    assert "task.select_tokens=480" in short

    main(
        [
            "--optimizers",
            "adamw",
            "--trials",
            "2",
            "--seeds",
            "1",
            "--name",
            "lm",
            "--out",
            str(tmp_path / "tune"),
            "--results",
            str(tmp_path / "results"),
            *FW_TINY,
        ]
    )
    record = json.loads((tmp_path / "tune" / "lm" / "tune.json").read_text())
    assert record["select_metric"] == "select_loss"
    trial_dirs = (tmp_path / "tune" / "lm" / "trials" / "adamw").iterdir()
    trials = [json.loads((d / "summary.json").read_text()) for d in trial_dirs]
    best = min(trials, key=lambda s: s["final_eval"]["select_loss"])
    assert record["best"]["adamw"]["value"] == pytest.approx(best["final_eval"]["select_loss"])
