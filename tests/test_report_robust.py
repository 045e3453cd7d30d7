"""`optbench report` against damaged, duplicated and foreign files (issue 12 items 4, 5, 8 and the
report's messages and plots). Run directories are written by tests/benchmark_runs.py from hand-made
numbers; nothing trains here."""

from __future__ import annotations

import json

import pytest

from optbench.commands.report import main
from optbench.errors import ConfigError
from optbench.report.build import build_report
from tests.benchmark_runs import write_run


def _runs(root, n=3, **kw):
    return [write_run(root / f"{i}", None, {0: 4.0, 10: 3.5 - i / 100}, seed=i, **kw) for i in range(n)]


@pytest.mark.parametrize(
    "damage",
    [
        b'{"status": "compl',  # killed mid-write
        b"\x00" * 512,  # zero-filled (a crash before the data reached the disk)
        bytes(range(256)) * 4,  # binary
        b"[1, 2, 3]",  # JSON, but not an object
    ],
)
def test_one_bad_summary_is_listed_with_its_path_and_the_rest_is_reported(tmp_path, capsys, damage):
    dirs = _runs(tmp_path / "runs")
    (dirs[1] / "summary.json").write_bytes(damage)
    main([str(tmp_path / "runs"), "--out", str(tmp_path / "res"), "--name", "r", "--no-plots"])
    out = capsys.readouterr().out
    assert str(dirs[1] / "summary.json") in out and "unreadable" in out
    md = (tmp_path / "res" / "r" / "table.md").read_text()
    assert str(dirs[1] / "summary.json") in md
    # the two good runs are the row's statistics; the bad one counts as failed
    row = [line for line in md.splitlines() if line.startswith("| muon")]
    assert len(row) == 1 and "| 2 |" not in row[0]
    _, rows, _, _ = build_report([str(tmp_path / "runs")], "r2", out=tmp_path / "res", plots=False)
    s = next(r for r in rows if r.label == "muon").stats
    assert s["completed"] == 2 and s["failed"] == 1 and s["final"]["n"] == 2


def test_bad_metrics_lines_are_skipped_with_a_note(tmp_path, capsys):
    dirs = _runs(tmp_path / "runs")
    m = dirs[0] / "metrics.jsonl"
    m.write_bytes(m.read_bytes() + b'{"type": "eval", "step": 11, "val_loss": \xff\xfe 3.1}\n')  # non-UTF-8
    m2 = dirs[2] / "metrics.jsonl"
    m2.write_bytes(m2.read_bytes() + b'{"type": "train", "step": 12, "lo')  # truncated last line
    main([str(tmp_path / "runs"), "--out", str(tmp_path / "res"), "--name", "m"])
    out = capsys.readouterr().out
    assert f"{m}: 1 unreadable line skipped" in out and f"{m2}: 1 unreadable line skipped" in out
    _, rows, _, plots = build_report([str(tmp_path / "runs")], "m2", out=tmp_path / "res")
    assert rows[0].stats["completed"] == 3 and plots  # every run is in; the curves are drawn
    assert max(e["step"] for e in rows[0].runs[0].evals) == 10


def test_binary_metrics_file_does_not_kill_the_report(tmp_path, capsys):
    dirs = _runs(tmp_path / "runs")
    (dirs[1] / "metrics.jsonl").write_bytes(bytes(range(256)) * 64)
    _, rows, md, plots = build_report([str(tmp_path / "runs")], "b", out=tmp_path / "res")
    assert rows[0].stats["completed"] == 3 and "unreadable line" in md and plots


def test_by_optimizer_works_when_summaries_have_no_optimizer_field(tmp_path):
    """A summary without the field (a failed job's, an unreadable one) used to make `--by optimizer`
    say "'optimizer' is in no run; valid keys include: ..., optimizer"."""
    dirs = _runs(tmp_path / "runs", n=2)
    for d in dirs:
        s = json.loads((d / "summary.json").read_text())
        s["optimizer"] = None
        (d / "summary.json").write_text(json.dumps(s))
    _, rows, _, _ = build_report([str(tmp_path / "runs")], "o", by=["optimizer"], out=tmp_path / "res", plots=False)
    assert [r.label for r in rows] == ["muon"] and rows[0].stats["runs"] == 2
    # all summaries unreadable and no config: still one row named '?', not a refusal
    for d in dirs:
        (d / "summary.json").write_bytes(b"\x00" * 16)
        (d / "config.yaml").unlink()
    _, rows, md, _ = build_report([str(tmp_path / "runs")], "o", by=["optimizer"], out=tmp_path / "res", plots=False)
    assert rows[0].stats["failed"] == 2
    # a key that really is in no run is refused, and the keys it offers are ones that exist
    with pytest.raises(ConfigError, match="'optimiser' is in no run") as e:
        build_report([str(tmp_path / "runs")], "o", by=["optimiser"], out=tmp_path / "res", plots=False)
    assert "optimizer.lr" not in str(e.value) and "lr," not in str(e.value)


def test_report_removes_only_the_plots_it_wrote(tmp_path):
    from optbench.report.build import PLOTS_MANIFEST

    _runs(tmp_path / "runs", n=2)
    plots_dir = tmp_path / "res" / "p" / "plots"
    plots_dir.mkdir(parents=True)
    mine = plots_dir / "my_figure.png"
    mine.write_bytes(b"\x89PNG user's own figure")
    _, _, _, first = build_report([str(tmp_path / "runs")], "p", out=tmp_path / "res")
    assert first and mine.exists()
    assert sorted(json.loads((plots_dir / PLOTS_MANIFEST).read_text())["files"]) == sorted(p.name for p in first)
    # a plot of the first report that the second does not draw is removed; the user's file stays
    stale = plots_dir / "lr_sensitivity.png"
    stale.write_bytes(b"old")
    manifest = json.loads((plots_dir / PLOTS_MANIFEST).read_text())
    manifest["files"] += ["lr_sensitivity.png", "../../../outside.png"]
    (plots_dir / PLOTS_MANIFEST).write_text(json.dumps(manifest))
    (tmp_path / "outside.png").write_bytes(b"x")
    build_report([str(tmp_path / "runs")], "p", out=tmp_path / "res", plots=False)
    assert mine.exists() and not stale.exists() and (tmp_path / "outside.png").exists()
    assert not any(p.exists() for p in first)
    assert sorted(x.name for x in plots_dir.iterdir()) == ["my_figure.png"]


def test_a_sweep_listing_a_value_twice_warns_at_launch(capsys):
    from optbench.config import precheck

    precheck(["seed=0,1", "trainer.max_steps=3"], multirun=True)
    assert "warning" not in capsys.readouterr().err
    precheck(["seed=0,0", "trainer.max_steps=3"], multirun=True)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "same job twice (seed=0 listed twice)" in err[0]
    precheck(["optimizer.lr=1e-3,0.001"], multirun=True)  # two spellings of one value
    assert "same job twice" in capsys.readouterr().err


def test_duplicate_runs_are_counted_once_and_named_under_the_table(tmp_path):
    import csv

    root = tmp_path / "runs"
    a = write_run(root / "0", None, {0: 4.0, 10: 3.40}, seed=0)
    b = write_run(root / "1", None, {0: 4.0, 10: 3.40}, seed=0)  # `-m seed=0,0`: the same run again
    c = write_run(root / "2", None, {0: 4.0, 10: 3.50}, seed=1)
    _, rows, md, _ = build_report([str(root)], "d", out=tmp_path / "res", plots=False)
    s = rows[0].stats
    assert s["runs"] == 2 and s["final"]["n"] == 2 and s["duplicates"] == 1
    assert s["final"]["mean"] == pytest.approx(3.45)  # not (3.40 + 3.40 + 3.50) / 3
    assert f"`{b}` has the same configuration as `{a}`" in md
    assert "each configuration is counted once" in md
    with open(tmp_path / "res" / "d" / "runs.csv") as f:
        marks = {r["path"]: r["duplicate_of"] for r in csv.DictReader(f)}
    assert marks == {str(a): "", str(b): str(a), str(c): ""}
    # only duplicates: one run, no spread claimed
    _, rows, md, _ = build_report([str(a), str(b)], "d2", out=tmp_path / "res", plots=False)
    assert rows[0].stats["runs"] == 1 and "± 0.0000" not in md and "[3.4000, 3.4000]" not in md


def _lr_runs(root, mode_task=None):
    """adamw at 3 lrs (the largest diverged, one seed of the middle one NaN), sgd at 2 (the largest off
    to 10.0, diverged): the x axis must reach 10 and the crosses sit at the worst edge."""
    import math

    i = 0
    for opt, lrs in (("adamw", [1e-3, 1e-2, 1e-1]), ("sgd", [1e-2, 10.0])):
        for lr in lrs:
            for seed in (0, 1):
                status = "diverged" if lr in (1e-1, 10.0) else "completed"
                final = math.nan if (opt, lr, seed) == ("adamw", 1e-2, 1) else 3.0 + lr
                write_run(root / f"{i}", None, {0: 4.0, 10: final}, seed=seed, optimizer=opt, lr=lr, status=status)
                i += 1


def test_lr_sensitivity_keeps_diverged_and_non_finite_runs_on_the_figure(tmp_path, monkeypatch):
    from optbench.report import plots as P

    _lr_runs(tmp_path / "runs")
    seen = {}
    real_save = P.save_figure

    def spy(fig, path):
        if path.name.startswith("lr_sensitivity"):
            ax = fig.axes[0]
            seen["xlim"] = ax.get_xlim()
            seen["crosses"] = {
                c.get_label(): c.get_offsets().tolist() for c in ax.collections if "diverged" in str(c.get_label())
            }
            seen["notes"] = [t.get_text() for t in ax.texts]
        return real_save(fig, path)

    monkeypatch.setattr(P, "save_figure", spy)
    _, _, _, plots = build_report([str(tmp_path / "runs")], "lr", out=tmp_path / "res")
    assert any(p.name == "lr_sensitivity.png" for p in plots)
    lo, hi = seen["xlim"]
    assert lo < 1e-3 and hi > 10.0  # every lr tried is on the figure
    # a loss (mode min): crosses at the top edge (axes fraction 1), at each lr with a bad run
    adamw = seen["crosses"]["adamw: diverged / failed / non-finite"]
    assert sorted(x for x, _ in adamw) == pytest.approx([1e-2, 1e-1]) and all(y == 1.0 for _, y in adamw)
    assert [x for x, _ in seen["crosses"]["sgd: diverged / failed / non-finite"]] == pytest.approx([10.0])
    assert sorted(seen["notes"]) == ["1/2", "2/2", "2/2"]


def test_no_performance_profile_when_no_task_reached_its_target(tmp_path):
    for task in ("task_a", "task_b"):  # val_loss target 3.28 in write_run: 3.5 never reaches it
        for seed in (0, 1):
            write_run(tmp_path / "runs" / f"{task}{seed}", None, {0: 4.0, 10: 3.5}, seed=seed, task=task)
    _, rows, md, plots = build_report([str(tmp_path / "runs")], "pp", out=tmp_path / "res")
    assert {r.task for r in rows} == {"task_a", "task_b"}
    assert "performance_profile.png" not in {p.name for p in plots}
    assert "performance_profile.png not drawn: no row of the 2 tasks reached its target" in md
    assert not (tmp_path / "res" / "pp" / "plots" / "performance_profile.png").exists()


@pytest.mark.parametrize(
    "field",
    [{"seed": "x"}, {"seed": [1]}, {"status": 5}, {"final_metric": "abc"}, {"mode": 3}, {"steps_to_target": "x"}],
)
def test_a_summary_with_wrongly_typed_fields_does_not_kill_the_report(tmp_path, field):
    dirs = _runs(tmp_path / "runs")
    s = json.loads((dirs[1] / "summary.json").read_text())
    s.update(field)
    (dirs[1] / "summary.json").write_text(json.dumps(s))
    _, rows, md, _ = build_report([str(tmp_path / "runs")], "w", out=tmp_path / "res")
    assert sum(r.stats["runs"] for r in rows) == 3
