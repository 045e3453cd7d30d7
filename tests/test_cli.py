"""`optbench` as a user runs it: the console script, one-line errors, Hydra's grammar."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import optbench_cli

QUICK = ["trainer.max_steps=4", "trainer.eval_every=2", "trainer.batch_size=32", "trainer.progress=false"]


def assert_one_line_error(result, *needles):
    assert result.returncode == 2, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("optbench: error:")
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(
    "override, needles",
    [
        ("optimizer=nope", ["'nope'", "adamw", "sgd"]),
        ("scheduler=zigzag", ["'zigzag'", "constant", "cosine"]),
        ("task=imagenet", ["'imagenet'", "cifar10_synthetic"]),
        ("trainer.max_stepz=5", ["trainer.max_stepz", "max_steps"]),
        ("optimizer.lrr=0.1", ["optimizer.lrr", "lr"]),
        ("optimizer.lr=-0.1", ["optimizer.lr", "> 0"]),
        ("trainer.max_steps=0", ["trainer.max_steps=0"]),
        ("trainer.amp=fp8", ["fp8", "bf16"]),
        ("trainer.device=tpu", ["tpu", "auto"]),
        ("logger=slack", ["'slack'", "jsonl", "wandb"]),
        ("data.synthetic=false data.root=/nonexistent/cifar", ["/nonexistent/cifar", "optbench data cifar10"]),
        ("optimizer=lbfgs trainer.amp=fp16", ["fp16", "lbfgs", "bf16"]),
        ("optimizer.groups.scalar.weight_decay=-2", ["groups.scalar.weight_decay=-2", "multiplier"]),
    ],
)
def test_bad_input_is_one_line_exit_2(override, needles, data_root):
    result = optbench_cli("train", *QUICK, *override.split())
    assert_one_line_error(result, *needles)


def test_batch_not_divisible_by_accumulation(data_root):
    result = optbench_cli("train", "trainer.batch_size=100", "trainer.grad_accum=3", *QUICK[:2])
    assert_one_line_error(result, "batch_size=100", "3")


def test_bad_value_inside_a_sweep_is_caught_before_any_job(data_root, tmp_path):
    result = optbench_cli("train", "-m", "optimizer=adamw,nope", f"hydra.sweep.dir={tmp_path}/sweep", *QUICK)
    assert_one_line_error(result, "'nope'")
    assert not (tmp_path / "sweep").exists()


def test_unknown_verb():
    result = optbench_cli("trian")
    assert_one_line_error(result, "'trian'", "train")


def test_train_end_to_end_from_the_cli(data_root, tmp_path):
    run_dir = tmp_path / "run"
    result = optbench_cli(
        "train",
        "task=cifar10_synthetic",
        "optimizer=adamw",
        "trainer.max_steps=30",
        "trainer.eval_every=15",
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr
    assert "completed" in result.stdout and "test_acc=" in result.stdout
    assert "it/s" in result.stderr or "img/s" in result.stderr  # the progress bar
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 30
    losses = [
        json.loads(ln)["loss"]
        for ln in (run_dir / "metrics.jsonl").read_text().splitlines()
        if json.loads(ln)["type"] == "train"
    ]
    assert losses[-1] < losses[0]


def test_multirun_gives_each_job_its_own_directory(data_root, tmp_path):
    sweep = tmp_path / "sweep"
    result = optbench_cli("train", "-m", "optimizer=adamw,sgd", "seed=0,1", f"hydra.sweep.dir={sweep}", *QUICK)
    assert result.returncode == 0, result.stderr
    summaries = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/summary.json"))]
    assert len(summaries) == 4
    assert sorted((s["optimizer"], s["seed"]) for s in summaries) == [
        ("adamw", 0),
        ("adamw", 1),
        ("sgd", 0),
        ("sgd", 1),
    ]
    configs = [Path(p).read_text() for p in sorted(sweep.glob("*/config.yaml"))]
    assert all("overrides:" in c for c in configs)


def test_help_lists_config_groups():
    result = optbench_cli("train", "--help")
    assert result.returncode == 0
    for group in ("task:", "optimizer:", "scheduler:", "trainer:", "logger:", "experiment:"):
        assert group in result.stdout


def test_cfg_job_prints_the_composed_config():
    result = optbench_cli("train", "optimizer=sgd", "optimizer.lr=0.3", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    assert "name: sgd" in result.stdout and "lr: 0.3" in result.stdout


def test_list_describes_every_group():
    result = optbench_cli("list")
    assert result.returncode == 0
    for heading in ("optimizers:", "schedulers:", "tasks:", "experiments:"):
        assert heading in result.stdout
    assert "cifar10_synthetic" in result.stdout and "torch.optim" in result.stdout


def run_in_process(capsys, *argv):
    """`optbench ARGV` in this process (no interpreter start-up): (exit status, stdout, stderr)."""
    from optbench.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


@pytest.mark.parametrize(
    "argv, needles",
    [
        # regressions: each of these used to end in a traceback, a usage block or a silent run
        (["train", "foo"], ["'foo'", "key=value"]),
        (["train", "--cfg", "jobb"], ["jobb", "--cfg job"]),
        (["train", "hydra.run.dir="], ["hydra.run.dir", "empty"]),
        (["train", "optimizer.betas=[0.9]"], ["optimizer.betas", "2 numbers"]),
        (["train", "optimizer.betas=0.9"], ["optimizer.betas", "2 numbers"]),
        (["train", "optimizer=adan", "optimizer.betas=[0.9,0.9]"], ["3 numbers", "0.98,0.92,0.99"]),
        (["train", "optimizer.groups.head.lr_mult=-1"], ["optimizer.groups.head.lr_mult=-1", ">= 0"]),
        (["train", "optimizer.groups.hed.lr_mult=0.1"], ["'optimizer.groups'", "head, matrix"]),
        (["train", "optimizer=muon", "optimizer.ns_steps=0"], ["optimizer.ns_steps=0", ">= 1"]),
        (["train", "trainer.compile=maybe"], ["trainer.compile='maybe'", "true, false"]),
        (["train", "trainer.stop_at_target=maybe"], ["trainer.stop_at_target", "true, false"]),
        (["train", "task.target=abc"], ["task.target='abc'", "number"]),
        (["train", "task=fineweb_synthetic", "model=cnn_small"], ["'cnn_small'", "gpt_tiny"]),
        (["train", "model=gpt_tiny"], ["'gpt_tiny'", "cnn_small"]),
        (["list", "nope"], ["'nope'", "optimizers"]),
        (["report"], ["report", "DIR"]),
        (["report", "/nonexistent"], ["/nonexistent"]),
        (["tune", "--optimizers", "adamw", "--seeds", "abc"], ["--seeds", "'abc'"]),
        (["data", "nope"], ["'nope'", "cifar10", "fineweb10B"]),
        (["lr-find", "--start", "abc"], ["--start", "'abc'"]),
        (["lr-find", "--start", "10", "--end", "1"], ["--start 10 --end 1"]),
        (["landscape"], ["function=", "rosenbrock"]),
        (["landscape", "function=foo"], ["'foo'", "rosenbrock"]),
        (["schedule", "--bogus"], ["--bogus"]),
        (["schedule", "trainer.max_steps=0"], ["trainer.max_steps=0", ">= 1"]),
        (["schedule", "optimizer.lr=abc"], ["optimizer.lr='abc'"]),
        # issue 12: caught only once the run had started (exit 1), or not at all
        (["train", "seed=99999999999999999999"], ["seed=99999999999999999999", "2**63-1"]),
        (["train", "seed=-1"], ["seed=-1", "[0, 2**63-1]"]),
        (["train", "trainer.averaging.kind=ema", "trainer.averaging.ema_decay=1.5"], ["ema_decay=1.5", "[0, 1)"]),
        (["train", "task.target=1.5"], ["task.target=1.5", "accuracy", "[0, 1]"]),
        (["train", "optimizer.lr=inf"], ["optimizer.lr=inf", "finite"]),
        (["lr-find", "--end", "inf"], ["--end inf", "finite"]),
        (["train", "--cfg", "job", "optimizer.lr=-1"], ["optimizer.lr=-1", "> 0"]),
        (["train", "data.root=/tmp/données"], ["\"data.root='/tmp/données'\"", "quoted"]),  # not LexerNoViableAlt...
    ],
)
def test_bad_input_on_every_verb_is_one_line_exit_2(argv, needles, data_root, capsys):
    status, out, err = run_in_process(capsys, *argv)
    assert status == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("optbench: error:"), err
    assert "Traceback" not in out + err and "usage:" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_data_root_that_is_a_file_is_refused_before_the_run(tmp_path, capsys, data_root):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    status, _, err = run_in_process(capsys, "train", f"data.root={blocker}")
    assert status == 2 and err.count("\n") == 1 and "is a file, not a directory" in err, err


def test_unwritable_output_path_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    status, _, err = run_in_process(capsys, "data", "cifar10", "--root", str(blocker / "cifar10"))
    assert status == 2 and err.count("\n") == 1 and str(blocker) in err, err


def test_another_config_in_a_finished_run_dir_is_refused(data_root, tmp_path):
    """Without a checkpoint, `optimizer=sgd` in an AdamW run's directory used to overwrite its result."""
    run_dir = tmp_path / "run"
    first = optbench_cli("train", *QUICK, f"hydra.run.dir={run_dir}")
    assert first.returncode == 0, first.stderr
    before = (run_dir / "summary.json").read_text()
    second = optbench_cli("train", *QUICK, f"hydra.run.dir={run_dir}", "optimizer=sgd")
    assert_one_line_error(second, "optimizer.name='adamw'", "optimizer.name='sgd'", "hydra.run.dir")
    assert (run_dir / "summary.json").read_text() == before
    again = optbench_cli("train", *QUICK, f"hydra.run.dir={run_dir}")  # the same command still reruns
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize("preset", ["airbench94", "airbench94_muon"])
def test_airbench_presets_train_on_a_cpu_from_the_cli(preset, data_root, tmp_path):
    """The benchmark presets, shrunk (narrow net, small synthetic set): the full-width form is the
    same command without the model/data/batch overrides."""
    run_dir = tmp_path / "run"
    result = optbench_cli(
        "train",
        f"experiment={preset}",
        "task=cifar10_synthetic",
        "model.widths=[8,8,8]",
        "trainer.batch_size=100",
        "trainer.max_steps=4",
        "trainer.eval_every=2",
        f"data.root={tmp_path / 'syn'}",
        "data.n_train=400",
        "data.n_test=100",
        "trainer.progress=false",
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 4
    assert summary["clock_includes"] == ["data_init", "final_eval"] and summary["model_dtype"] == "fp32"


def test_fineweb_synthetic_target_below_the_entropy_floor_is_refused(capsys, data_root):
    status, _, err = run_in_process(capsys, "train", "task=fineweb_synthetic", "task.target=0.5")
    assert status == 2 and err.count("\n") == 1 and "entropy floor 1.0902" in err, err


def test_damaged_synthetic_dataset_is_generated_again(tmp_path, capsys):
    """A corrupt synthetic.json or batch file used to fail after start (or send the user to download
    the real CIFAR-10); it is a cache of a fixed-seed generator, so it is made again."""
    from optbench.data.cifar10 import batch_dir
    from optbench.data.synthetic import read_synthetic_cifar10

    root = tmp_path / "syn"
    first = read_synthetic_cifar10(root, n_train=50, n_test=20)
    (root / "synthetic.json").write_bytes(b"\x00\x00{not json")
    again = read_synthetic_cifar10(root, n_train=50, n_test=20)
    assert (again.train_images == first.train_images).all()
    (batch_dir(root) / "data_batch_2").write_bytes(b"garbage")
    third = read_synthetic_cifar10(root, n_train=50, n_test=20)
    assert (third.train_images == first.train_images).all()
    err = capsys.readouterr().err
    assert "regenerating the synthetic dataset" in err and "optbench data cifar10" not in err


def test_synthetic_n_train_zero_names_n_train(capsys, data_root):
    status, _, err = run_in_process(capsys, "train", "data.n_train=0")
    assert status == 2 and "data.n_train=0 is invalid" in err and "val_split" not in err, err


def test_help_into_a_closed_pipe_has_no_traceback(tmp_path):
    """`optbench train --help | head` ended in a BrokenPipeError traceback."""
    import os
    import subprocess
    import sys

    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written: every write is EPIPE
    exe = Path(sys.executable).with_name("optbench")
    proc = subprocess.run(
        [str(exe), "train", "--help"], stdout=write, stderr=subprocess.PIPE, text=True, cwd=tmp_path, timeout=120
    )
    os.close(write)
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
    assert proc.returncode == 141


def test_help_shows_amp_choices_not_yaml_false():
    result = optbench_cli("train", "--help")
    assert "amp: 'off'" in result.stdout and "amp: false" not in result.stdout


@pytest.mark.parametrize("flag, key", [([], "hydra.run.dir"), (["-m"], "hydra.sweep.dir")])
def test_read_only_run_or_sweep_dir_is_one_line(tmp_path, capsys, monkeypatch, data_root, flag, key):
    """A read-only run or sweep directory gave Hydra's traceback (exit 1) once Hydra made it. The
    test may run as root, for whom chmod does not bite: os.access is what the check asks."""
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == locked else real(p, mode, **kw))
    status, _, err = run_in_process(capsys, "train", *flag, f"{key}={locked}/run", "trainer.max_steps=2")
    assert status == 2 and err.count("\n") == 1, err
    assert f"{locked} is not writable" in err and key in err
    assert not (locked / "run").exists()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    status, _, err = run_in_process(capsys, "train", *flag, f"{key}={blocker}/run", "trainer.max_steps=2")
    assert status == 2 and "is a file, not a directory" in err, err
