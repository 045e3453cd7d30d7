"""The community-benchmark rules in `optbench report` (issue 16): the track-3 z-rule and its step count,
the airbench fixed-length claim, and `--leaderboard`. Run directories are written by
tests/benchmark_runs.py in the loop's formats, from hand-made numbers."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from scipy import stats as sps

from optbench.commands.report import main
from optbench.errors import ConfigError
from optbench.report import benchmarks as bm
from optbench.report import leaderboard as lb
from optbench.report.build import build_report
from optbench.report.collect import load_runs
from tests.benchmark_runs import write_run

TRACK3 = "nanogpt_track3"


# ------------------------------------------------------------------ the rule on numbers


@pytest.mark.parametrize(
    "mean, n, passes",
    [
        (3.278, 4, True),  # the README's own example: n=4 needs a mean below 3.278; exactly 3.278 is the boundary
        (3.2781, 4, False),
        (3.276, 1, True),  # one run: 3.276
        (3.2761, 1, False),
        (3.2787, 10, True),  # result #36: (0.0013) * sqrt(10) = 0.00411
        (3.2790, 16, True),  # 0.001 * 4 = 0.004, the boundary again
        (3.2790, 15, False),
        (3.30, 100, False),
        (math.nan, 4, False),
    ],
)
def test_track3_rule_on_hand_numbers(mean, n, passes):
    assert bm.track3_passes(mean, n) is passes


def test_track3_statistic_and_p():
    assert bm.track3_statistic(3.2779, 4) == pytest.approx(0.0042)
    # z = 0.0042 / 0.0013; p = P(Z >= z)
    assert bm.track3_p(3.2779, 4) == pytest.approx(sps.norm.sf(0.0042 / 0.0013))
    assert bm.track3_p(3.276, 1) < 0.0011  # 3.08 sigma: the README's "p < .001" threshold, 0.004 rounded


def test_the_published_marks_follow_the_rule():
    """Every ✓ row of the committed leaderboard passes the rule on its published mean and n, every Ⓧ fails."""
    with open(lb.LEADERBOARD_DIR / f"{TRACK3}.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["number"]) for r in rows] == list(range(1, len(rows) + 1)) and len(rows) >= 46
    for r in rows:
        assert bm.track3_passes(float(r["mean_val_loss"]), int(r["n"])) == (r["valid"] == "True"), r["number"]
    baseline = next(r for r in rows if r["number"] == "36")
    assert (baseline["steps"], baseline["mean_val_loss"], baseline["n"]) == ("3250", "3.2787", "10")


# ------------------------------------------------------------------ steps: the earliest shared passing step


def track3_runs(tmp_path: Path, per_seed: list[dict[int, float]], **kw) -> list:
    for i, evals in enumerate(per_seed):
        write_run(tmp_path / f"{i}", TRACK3, evals, seed=i, **kw)
    return load_runs([tmp_path])


def test_earliest_step_at_which_the_seed_mean_passes(tmp_path):
    per_seed = [
        {3000: 3.2900, 3100: 3.2770, 3200: 3.2760, 3250: 3.2750},  # seed 0 alone passes at 3100 (0.0030 < 0.004
        {3000: 3.2900, 3100: 3.2800, 3200: 3.2780, 3250: 3.2770},  # for n=1, but every seed counts) ...
        {3000: 3.2900, 3100: 3.2810, 3200: 3.2790, 3250: 3.2780},
        {3000: 3.2900, 3100: 3.2800, 3200: 3.2790, 3250: 3.2780},
    ]
    per_seed[0][3050] = 3.20  # a step only seed 0 evaluated never counts
    c = bm.track3_claim(track3_runs(tmp_path, per_seed))
    # means: 3100 -> 3.2795 (0.0010 < 0.004), 3200 -> 3.278 (0.004: passes at the boundary), 3250 -> 3.277
    assert c["valid"] and c["valid_at"]["step"] == 3200 and c["valid_at"]["n"] == 4
    assert c["valid_at"]["mean"] == pytest.approx(3.278)
    assert c["end"]["step"] == 3250 and c["end"]["mean"] == pytest.approx(3.277) and c["end"]["passes"]
    assert c["steps_evaluated"] == 4 and not c["notes"]


def test_a_diverged_run_counts_in_n_and_closes_the_later_steps(tmp_path):
    good = {3000: 3.270, 3250: 3.270}
    per_seed = [good, good, good]
    runs = track3_runs(tmp_path, per_seed)
    assert bm.track3_claim(runs)["valid_at"]["step"] == 3000
    # the fourth seed diverged after its step-1000 evaluation: no step after it is shared by all four
    write_run(tmp_path / "3", TRACK3, {1000: 3.9, 3000: math.nan}, seed=3, status="diverged", max_steps=3250)
    c = bm.track3_claim(load_runs([tmp_path]))
    assert not c["valid"] and c["valid_at"] is None and c["runs"] == 4
    assert c["end"]["step"] == 3250 and c["end"]["n"] == 3 and not c["end"]["passes"]
    assert any("did not complete (diverged)" in note for note in c["notes"])


def test_runs_stopped_at_the_target_are_not_valid(tmp_path):
    runs = track3_runs(tmp_path, [{3000: 3.270}] * 2, stop_reason="target reached", max_steps=3250)
    c = bm.track3_claim(runs)
    assert not c["valid"] and "early stopping" in " ".join(c["notes"])


def test_an_unreadable_run_stays_in_the_row_and_voids_it(tmp_path):
    for i in range(3):
        write_run(tmp_path / f"{i}", TRACK3, {3000: 3.270}, seed=i)
    (tmp_path / "2" / "summary.json").write_text('{"status": "compl')  # killed mid-write
    (tmp_path / "1" / "metrics.jsonl").write_text("not json\n")
    _, rows, md, _ = build_report([str(tmp_path)], "u", out=tmp_path / "res", plots=False)
    assert len(rows) == 1
    s = rows[0].stats
    assert s["runs"] == 3 and s["failed"] == 1 and s["completed"] == 2
    c = s["claim"]
    assert c["runs"] == 3 and not c["valid"]
    assert "| not valid |" in md and "unreadable" in md


# ------------------------------------------------------------------ the report's text


def test_report_prints_the_rule_table_and_z_lines(tmp_path, capsys):
    per_seed = [{3000: 3.279, 3250: 3.2775}, {3000: 3.277, 3250: 3.2785}]
    for i, ev in enumerate(per_seed):
        write_run(tmp_path / "runs" / f"m{i}", TRACK3, ev, seed=i)
        write_run(tmp_path / "runs" / f"a{i}", TRACK3, {3000: 3.31, 3250: 3.30}, seed=i, optimizer="adamw", lr=1e-3)
    main([str(tmp_path / "runs"), "--out", str(tmp_path / "res"), "--name", "t", "--no-plots"])
    out = capsys.readouterr().out
    assert "nanogpt_track3 rule: valid when (3.28 − mean val loss)·√n ≥ 0.004" in out
    # muon: mean 3.278 at 3000 with n=2 -> 0.0028: not valid; at 3250 also 3.278 -> not valid
    assert "| muon | 2 | not valid | n/a | 3250 | 3.2780 (n=2) | Ⓧ |" in out
    assert "- muon: not valid at any evaluation step; at the end, step 3250: (3.28 − 3.2780)·√2 = 0.0028 < 0.004" in out
    with open(tmp_path / "res" / "t" / "table.csv") as f:
        rows = {r["label"]: r for r in csv.DictReader(f)}
    assert rows["muon"]["benchmark"] == TRACK3 and rows["muon"]["valid"] == "False"
    assert float(rows["muon"]["end_statistic"]) == pytest.approx(0.002 * math.sqrt(2))


def test_rows_of_no_benchmark_get_no_rule(tmp_path):
    write_run(tmp_path / "0", None, {100: 3.1})
    write_run(tmp_path / "1", None, {100: 3.2}, seed=1)
    _, rows, md, _ = build_report([str(tmp_path)], "n", out=tmp_path / "res", plots=False)
    assert rows[0].stats["claim"] is None and "nanogpt_track3 rule" not in md and "claim" not in md


# ------------------------------------------------------------------ airbench: mean ± CI and p at the fixed length


def test_airbench_claim_is_mean_ci_and_one_sided_t_test(tmp_path):
    accs = [0.9412, 0.9398, 0.9405, 0.9421, 0.9401]
    for i, a in enumerate(accs):
        write_run(tmp_path / f"{i}", "airbench94_muon", {25: 0.80, 200: a}, seed=i)
    _, rows, md, _ = build_report([str(tmp_path)], "a", out=tmp_path / "res", plots=False)
    c = rows[0].stats["claim"]
    n, mean = len(accs), sum(accs) / len(accs)
    sd = (sum((a - mean) ** 2 for a in accs) / (n - 1)) ** 0.5
    lo, hi = sps.t.interval(0.95, n - 1, loc=mean, scale=sd / n**0.5)
    assert (c["n"], c["length"]) == (5, 200)
    assert (c["mean"], c["ci_low"], c["ci_high"]) == (pytest.approx(mean), pytest.approx(lo), pytest.approx(hi))
    t = (mean - 0.94) / (sd / n**0.5)
    assert c["t"] == pytest.approx(t) and c["p"] == pytest.approx(sps.t.sf(t, n - 1))
    line = next(x for x in md.splitlines() if "airbench94_muon claim" in x)
    assert f"{mean:.4f} ± {hi - mean:.4f}" in line and "one-sided one-sample t-test, H1: mean > 0.94" in line
    assert f"p = {sps.t.sf(t, n - 1):.3f}" in line and "(200 steps) over n = 5 of 5 runs" in line


def test_airbench_claim_with_a_failed_run_has_no_p(tmp_path):
    for i, a in enumerate([0.945, 0.946, 0.944]):
        write_run(tmp_path / f"{i}", "airbench94", {200: a}, seed=i)
    write_run(tmp_path / "3", "airbench94", {25: 0.5}, seed=3, status="failed", max_steps=200)
    c = bm.claim(load_runs([tmp_path]))
    assert math.isnan(c["p"]) and c["n"] == 3 and c["runs"] == 4
    assert "1 of 4 runs have no final test_acc" in c["notes"][0]
    assert "p: n/a" in bm.fixed_length_line("x", c)


def test_airbench_runs_short_of_their_length_give_no_p(tmp_path):
    for i, a in enumerate([0.945, 0.946]):
        write_run(tmp_path / f"{i}", "airbench94_muon", {150: a}, seed=i, max_steps=200)
    c = bm.claim(load_runs([tmp_path]))
    assert math.isnan(c["p"]) and "before their fixed length" in c["notes"][0]


# ------------------------------------------------------------------ --leaderboard


def test_leaderboard_ranks_our_rows_among_the_published(tmp_path, capsys):
    runs = tmp_path / "runs"
    # muon: 4 seeds pass at 3100 (mean 3.278); adamw: passes nowhere; sgd: exactly #36's 3250 / 3.2787 (n=10)
    for i in range(4):
        write_run(runs / f"m{i}", TRACK3, {3000: 3.29, 3100: 3.278, 3250: 3.276}, seed=i)
        write_run(runs / f"a{i}", TRACK3, {3000: 3.40, 3250: 3.31}, seed=i, optimizer="adamw", lr=1e-3)
    for i in range(10):
        write_run(runs / f"s{i}", TRACK3, {3000: 3.29, 3250: 3.2787}, seed=i, optimizer="sgd", lr=0.1)
    main([str(runs), "--out", str(tmp_path / "res"), "--name", "lb", "--no-plots", "--leaderboard", TRACK3])
    out = capsys.readouterr().out
    with open(tmp_path / "res" / "lb" / f"leaderboard_{TRACK3}.csv") as f:
        board = list(csv.DictReader(f))
    assert (tmp_path / "res" / "lb" / f"leaderboard_{TRACK3}.md").read_text() in out
    ours = {r["description"]: r for r in board if r["source"] == "optbench"}
    assert set(ours) == {"optbench: muon", "optbench: adamw", "optbench: sgd"}
    valid = [r for r in board if r["valid"] == "True"]
    assert [int(r["rank"]) for r in valid] == list(range(1, len(valid) + 1))
    steps = [int(r["steps"]) for r in valid]
    assert steps == sorted(steps)
    muon = valid.index(ours["optbench: muon"])
    assert int(valid[muon - 1]["steps"]) < 3100 <= int(valid[muon + 1]["steps"])  # after #26 (3090), before 3125
    assert valid[muon - 1]["number"] == "26" and ours["optbench: muon"]["n"] == "4"
    # a tie on steps and loss: the published row first
    sgd = valid.index(ours["optbench: sgd"])
    assert valid[sgd - 1]["number"] == "36"
    assert float(valid[sgd - 1]["mean_val_loss"]) == pytest.approx(float(ours["optbench: sgd"]["mean_val_loss"]))
    # not valid: unranked, after every valid row, with the published Ⓧ rows
    invalid = board[len(valid) :]
    assert all(r["valid"] == "False" and r["rank"] == "" for r in invalid)
    assert {r["number"] for r in invalid} == {"1", "2", "3", "optbench"}
    assert "| — | optbench | not valid (ran 3250) | 3.3100 (n=4) | Ⓧ | **optbench: adamw** |" in out
    assert "| 3600 (not valid) |" in out.replace("| — | 1 ", "")


def test_a_changed_setup_gets_the_rule_but_no_rank(tmp_path, capsys):
    """The small CPU version of the preset (2 layers, synthetic tokens) passes the rule on its own loss
    scale; it is shown with its numbers, unranked, with what differs from the benchmark."""
    small = {
        "model": {"n_layer": 2, "n_embd": 256, "vocab_size": 50304},
        "task": {"seq_len": 1024},
        "data": {"synthetic": True},
    }
    full = {"model": {"n_layer": 12, "n_embd": 768, "vocab_size": 50304}, "data": {"synthetic": False}}
    for i in range(2):
        write_run(tmp_path / "r" / f"s{i}", TRACK3, {100: 2.9}, seed=i, config=small)
        write_run(tmp_path / "r" / f"f{i}", TRACK3, {3000: 3.27}, seed=i, optimizer="adamw", config=full)
    main([str(tmp_path / "r"), "--out", str(tmp_path / "res"), "--no-plots", "--leaderboard", TRACK3])
    out = capsys.readouterr().out
    assert (
        "not the benchmark's setup, so no leaderboard result: model.n_layer=2 (the benchmark's 12), "
        "model.n_embd=256 (the benchmark's 768), data.synthetic=True (the benchmark's False)"
    ) in out
    with open(tmp_path / "res" / "r" / f"leaderboard_{TRACK3}.csv") as f:
        board = {r["description"]: r for r in csv.DictReader(f) if r["source"] == "optbench"}
    small_row, full_row = board["optbench: muon"], board["optbench: adamw"]
    assert (small_row["valid"], small_row["comparable"], small_row["rank"]) == ("True", "False", "")
    ahead = [e for e in lb.published(TRACK3) if e.valid and (e.steps, e.loss) < (3000, 3.27)]
    assert full_row["comparable"] == "True" and full_row["rank"] == str(len(ahead) + 1) == "13"  # before #32
    # and the airbench claim says the same of a synthetic-data run
    write_run(tmp_path / "a" / "0", "airbench94_muon", {200: 0.95}, config={"data": {"synthetic": True}})
    write_run(tmp_path / "a" / "1", "airbench94_muon", {200: 0.96}, seed=1, config={"data": {"synthetic": True}})
    c = bm.claim(load_runs([tmp_path / "a"]))
    assert not c["comparable"] and "not its claim: data.synthetic=True" in c["notes"][-1]


def test_unknown_leaderboard_is_one_line_with_the_choices(tmp_path, capsys):
    from optbench.cli import main as cli_main

    write_run(tmp_path / "0", TRACK3, {100: 3.5})
    with pytest.raises(ConfigError, match=r"--leaderboard 'nanogpt' is unknown; valid choices: nanogpt_track3"):
        main([str(tmp_path), "--out", str(tmp_path / "res"), "--leaderboard", "nanogpt"])
    assert not (tmp_path / "res").exists()  # refused before anything was written
    with pytest.raises(SystemExit) as e:
        cli_main(["report", str(tmp_path), "--out", str(tmp_path / "res"), "--leaderboard", "nanogpt"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "valid choices: nanogpt_track3" in err


def test_leaderboard_without_benchmark_rows_says_which_benchmarks_it_found(tmp_path):
    write_run(tmp_path / "0", "airbench94_muon", {200: 0.94})
    with pytest.raises(ConfigError, match="no run here has benchmark nanogpt_track3.*benchmarks: airbench94_muon"):
        build_report([str(tmp_path)], "x", out=tmp_path / "res", plots=False, leaderboard=TRACK3)


def test_a_later_report_without_leaderboard_removes_the_old_ranking(tmp_path):
    write_run(tmp_path / "r" / "0", TRACK3, {100: 3.5})
    build_report([str(tmp_path / "r")], "x", out=tmp_path / "res", plots=False, leaderboard=TRACK3)
    assert (tmp_path / "res" / "x" / f"leaderboard_{TRACK3}.md").exists()
    build_report([str(tmp_path / "r")], "x", out=tmp_path / "res", plots=False)
    assert not list((tmp_path / "res" / "x").glob("leaderboard_*"))


# ------------------------------------------------------------------ scripts/make_leaderboard_csv.py


README_SNIPPET = """# Track
## Notable results history

| # | Steps to 3.28 | Evidence | Description | Date | Log | Contributors |
| - | - | - | - | - | - | - |
| 1 | 3600(!) | 3.2777 (n=1)Ⓧ | [Muon](https://x.y/muon) with aux Adam, lr=.02 | 2026/04/26 | [log](results/a.txt) | [@k](https://x) |
| 2 | 3250 | 3.2787 (n=10)✓ | clamps ‖u‖\\_F, `CWD=0.025` | 2026/06/11 | [log](results/b/c.txt) | me |

Notes: after the table.

## Rules
"""


def test_make_leaderboard_csv_reads_the_readme_table(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_leaderboard_csv", Path(__file__).resolve().parent.parent / "scripts" / "make_leaderboard_csv.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    readme = tmp_path / "records" / "track_3_optimization" / "README.md"
    readme.parent.mkdir(parents=True)
    readme.write_text(README_SNIPPET, encoding="utf-8")
    mod.main(["--reference", str(tmp_path), "--out", str(tmp_path / "out")])
    with open(tmp_path / "out" / "nanogpt_track3.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert rows == [
        {
            "number": "1",
            "steps": "3600",
            "record": "True",
            "mean_val_loss": "3.2777",
            "n": "1",
            "valid": "False",
            "description": "Muon with aux Adam, lr=.02",
            "date": "2026-04-26",
            "log": "records/track_3_optimization/results/a.txt",
        },
        {
            "number": "2",
            "steps": "3250",
            "record": "False",
            "mean_val_loss": "3.2787",
            "n": "10",
            "valid": "True",
            "description": "clamps ‖u‖_F, CWD=0.025",
            "date": "2026-06-11",
            "log": "records/track_3_optimization/results/b/c.txt",
        },
    ]
    readme.write_text(README_SNIPPET.replace("3.2787 (n=10)✓", "3.2787 n=10"), encoding="utf-8")
    with pytest.raises(SystemExit, match="row 2: cannot read"):
        mod.main(["--reference", str(tmp_path), "--out", str(tmp_path / "out")])
