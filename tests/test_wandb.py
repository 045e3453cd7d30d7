"""logger=wandb: an offline run leaves a W&B run directory holding exactly the logged metrics.

The .wandb file is read here with an independent decoder of its container (the LevelDB log
format: 32 KiB blocks of CRC'd fragments after a 7-byte ':W&B' header) and wandb's own protobuf
Record message, then compared with metrics.jsonl and summary.json.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

wandb = pytest.importorskip("wandb")

BLOCK = 32768
HEADER = 7  # uint32 crc, uint16 length, uint8 type
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4

TINY = [
    "trainer.max_steps=4",
    "trainer.eval_every=2",
    "trainer.log_every=1",
    "trainer.batch_size=32",
    "data.n_train=256",
    "data.n_test=128",
    "trainer.device=cpu",
]


def wandb_records(path: Path):
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, fragments = 7, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        pos += HEADER
        if kind == 0 and length == 0:  # zero-filled rest of a block
            pos += left - HEADER
            continue
        fragments += data[pos : pos + length]
        pos += length
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(fragments)
            yield record
            fragments = b""


def finished_records(path: Path, timeout_s: float = 60.0) -> list:
    """wandb's service writes the file asynchronously: wait for its closing 'exit' record."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        records = list(wandb_records(path))
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def history(records) -> list[dict]:
    rows = []
    for r in records:
        if r.WhichOneof("record_type") == "history":
            rows.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item})
    return rows


def summaries(records) -> dict:
    out = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            for i in r.summary.update:
                out[i.key or "/".join(i.nested_key)] = json.loads(i.value_json)
    return out


@pytest.fixture
def offline_env(tmp_path, monkeypatch):
    wandb_dir = tmp_path / "wandb_home"
    wandb_dir.mkdir()
    monkeypatch.setenv("WANDB_DIR", str(wandb_dir))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    return wandb_dir


def test_offline_run_holds_the_logged_metrics(run_train, tmp_path, offline_env, capsys):
    summary, run_dir = run_train([*TINY, "logger=wandb", "logger.wandb.mode=offline", f"data.root={tmp_path}/data"])
    assert summary["status"] == "completed"
    # local files are written whatever the logger
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_lines = [x for x in lines if x["type"] == "train"]
    eval_lines = [x for x in lines if x["type"] == "eval"]
    assert len(train_lines) == 4 and len(eval_lines) == 2

    runs = list((offline_env / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, runs
    records = finished_records(runs[0])
    hist = history(records)
    logged_train = {h["step"]: h for h in hist if "train/loss" in h}
    logged_eval = {h["step"]: h for h in hist if "eval/test_acc" in h}
    assert sorted(logged_train) == [x["step"] for x in train_lines]
    for x in train_lines:
        assert logged_train[x["step"]]["train/loss"] == pytest.approx(x["loss"], rel=1e-12)
        assert logged_train[x["step"]]["train/lr/matrix"] == pytest.approx(x["lr"]["matrix"])
    for x in eval_lines:
        assert logged_eval[x["step"]]["eval/test_acc"] == pytest.approx(x["test_acc"])

    s = summaries(records)
    assert s["status"] == "completed"
    assert s["final_metric"] == pytest.approx(summary["final_metric"])
    assert s["steps"] == 4

    kinds = {r.WhichOneof("record_type") for r in records}
    assert "config" in kinds and "run" in kinds  # the config and the run's identity
    config = {}
    for r in records:  # the initial config rides in the run record, later changes in config records
        kind = r.WhichOneof("record_type")
        if kind in ("run", "config"):
            items = r.run.config.update if kind == "run" else r.config.update
            config.update({i.key: json.loads(i.value_json) for i in items})
    assert config["optimizer"]["name"] == "adamw"
    assert "versions" in config  # system information: torch, device, git commit
    # mode=offline was asked for, so nothing is said about credentials
    assert "no credentials" not in capsys.readouterr().err


def test_online_without_credentials_says_so_once_and_goes_offline(offline_env, capsys, monkeypatch):
    from optbench.train import wandb_sink
    from optbench.train.wandb_sink import resolve_mode

    monkeypatch.setattr(wandb_sink, "_said_offline", False)
    assert resolve_mode("online") == "offline"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no credentials" in err[0]
    assert resolve_mode("online") == "offline"  # the next run of a multirun: nothing more said
    assert capsys.readouterr().err == ""
    assert resolve_mode("disabled") == "disabled"
    assert resolve_mode("offline") == "offline"


def test_api_key_counts_as_credentials(offline_env, monkeypatch):
    from optbench.train.wandb_sink import has_credentials, resolve_mode

    assert not has_credentials()
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert has_credentials()
    assert resolve_mode("online") == "online"


def test_netrc_entry_counts_as_credentials(offline_env, tmp_path, monkeypatch):
    from optbench.train.wandb_sink import has_credentials

    rc = tmp_path / "netrc"
    rc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    rc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(rc))
    assert has_credentials()


def test_bad_mode_is_one_line_config_error(offline_env):
    from optbench.errors import ConfigError
    from optbench.train.wandb_sink import resolve_mode

    with pytest.raises(ConfigError, match="valid choices: online, offline, disabled"):
        resolve_mode("sometimes")


def test_report_logs_its_table_to_wandb(run_train, tmp_path, offline_env):
    from optbench.commands.report import main

    summary, run_dir = run_train([*TINY, "logger=jsonl", f"data.root={tmp_path}/data"])
    main(
        [
            str(run_dir),
            "--name",
            "w",
            "--out",
            str(tmp_path / "res"),
            "--no-plots",
            "--wandb",
            "--wandb-mode",
            "offline",
        ]
    )
    runs = list((offline_env / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1  # logger=jsonl made none; the report made this one
    # a wandb.Table is logged as a table file whose reference sits in the history (nested keys)
    logged = [h for h in history(finished_records(runs[0])) if "report/table/_type" in h]
    assert logged and logged[0]["report/table/_type"] == "table-file"
    assert logged[0]["report/table/nrows"] == 1


def test_wandb_failure_does_not_cost_the_run(make_cfg, tmp_path, offline_env, monkeypatch, capsys):
    from optbench.train.wandb_sink import WandbSink

    def broken_init(**kwargs):
        raise RuntimeError("service unreachable")

    monkeypatch.setattr(wandb, "init", broken_init)
    sink = WandbSink(make_cfg(["logger=wandb", "logger.wandb.mode=offline"]), tmp_path)
    sink.log({"type": "train", "step": 1, "loss": 1.0})
    sink.summary({"status": "completed"})
    sink.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "service unreachable" in err[0] and "local files only" in err[0]


def test_resumed_run_continues_the_same_wandb_run(make_cfg, tmp_path, offline_env, monkeypatch):
    """A SLURM requeue or a resume opens the W&B run of the directory again (same id, resume="allow"),
    not a second one; another directory gets another id."""
    from optbench.train.wandb_sink import ID_FILE, WandbSink

    calls = []

    class FakeRun:
        def define_metric(self, *a, **k):
            pass

        class config:
            @staticmethod
            def update(*a, **k):
                pass

        def finish(self, **k):
            pass

    def fake_init(**kwargs):
        calls.append(kwargs)
        return FakeRun()

    monkeypatch.setattr(wandb, "init", fake_init)
    cfg = make_cfg(["logger=wandb", "logger.wandb.mode=offline"])
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    run_a.mkdir(), run_b.mkdir()
    WandbSink(cfg, run_a).close()
    WandbSink(cfg, run_a).close()  # the requeued job
    WandbSink(cfg, run_b).close()
    assert calls[0]["id"] == calls[1]["id"] and calls[0]["id"] != calls[2]["id"]
    assert all(c["resume"] == "allow" for c in calls)
    assert (run_a / ID_FILE).read_text().strip() == calls[0]["id"]
    # the stored id wins over the path: a moved run directory keeps its W&B run
    moved = tmp_path / "moved"
    run_a.rename(moved)
    WandbSink(cfg, moved).close()
    assert calls[3]["id"] == calls[0]["id"]
