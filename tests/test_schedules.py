"""Schedules against their formulas (written out independently here), warmup composition,
plateau, batch-size scaling, momentum schedules, validation and the `schedule` verb."""

from __future__ import annotations

import math

import pytest
import torch

from optbench.errors import ConfigError
from optbench.schedules import (
    SCHEDULES,
    MomentumSchedule,
    build_schedule,
    build_schedule_from_config,
    lr_scale,
    resolve_lr,
    validate_schedule_config,
)

T = 1000
STEPS = [0, 1, 99, 100, 249, 250, 251, 499, 500, 600, 749, 750, 800, 900, 999]


def cos_half(p):  # (1 + cos(pi p)) / 2
    return (1 + math.cos(math.pi * p)) / 2


# name, kwargs, reference multiplier m(t) for a run of T steps (no warmup)
CASES = [
    ("constant", {}, lambda t: 1.0),
    ("step", {"step_fraction": 0.25, "gamma": 0.5}, lambda t: 0.5 ** (t // 250)),
    ("multistep", {"milestones": [0.5, 0.75], "gamma": 0.1}, lambda t: 1.0 if t < 500 else (0.1 if t < 750 else 0.01)),
    ("exponential", {"gamma": 0.995}, lambda t: math.exp(t * math.log(0.995))),
    ("inverse_time", {"decay": 0.02}, lambda t: 1 / (1 + 0.02 * t)),
    ("inverse_sqrt", {"timescale": 50}, lambda t: (50 / (50 + t)) ** 0.5),
    ("poly", {"power": 2.0, "min_ratio": 0.1}, lambda t: 0.1 + 0.9 * (1 - t / T) ** 2),
    ("poly", {"power": 1.0}, lambda t: 1 - t / T),
    ("cosine", {"min_ratio": 0.0}, lambda t: cos_half(t / T)),
    ("cosine", {"min_ratio": 0.1}, lambda t: 0.1 + 0.9 * cos_half(t / T)),
    # periods 100, 200, 400 (starts at 0, 100, 300, 700)
    (
        "cosine_restarts",
        {"first_period": 0.1, "period_mult": 2.0, "min_ratio": 0.0},
        lambda t: (
            cos_half(t / 100)
            if t < 100
            else cos_half((t - 100) / 200)
            if t < 300
            else cos_half((t - 300) / 400)
            if t < 700
            else cos_half((t - 700) / 800)
        ),
    ),
    # onecycle and wsd, end_at=after_run: the floor at step T (never trained)
    (
        "onecycle",
        {"pct_start": 0.25, "div_factor": 10.0, "final_div_factor": 100.0, "end_at": "after_run"},
        lambda t: (1 - (1 - 0.1) * cos_half(t / 250)) if t < 250 else 0.001 + (1 - 0.001) * cos_half((t - 250) / 750),
    ),
    (
        "wsd",
        {"decay_fraction": 0.2, "decay_shape": "linear", "end_at": "after_run"},
        lambda t: 1.0 if t < 800 else 1 - (t - 800) / 200,
    ),
    (
        "wsd",
        {"decay_fraction": 0.2, "decay_shape": "cosine", "min_ratio": 0.1, "end_at": "after_run"},
        lambda t: 1.0 if t < 800 else 0.1 + 0.9 * cos_half((t - 800) / 200),
    ),
    (
        "wsd",
        {"decay_fraction": 0.5, "decay_shape": "1-sqrt", "end_at": "after_run"},
        lambda t: 1.0 if t < 500 else 1 - math.sqrt((t - 500) / 500),
    ),
    # the default, end_at=last_step: the floor at the last trained step T - 1 (onecycle: torch's peak at pct T - 1)
    (
        "onecycle",
        {"pct_start": 0.25, "div_factor": 10.0, "final_div_factor": 100.0},
        lambda t: (1 - (1 - 0.1) * cos_half(t / 249)) if t < 249 else 0.001 + (1 - 0.001) * cos_half((t - 249) / 750),
    ),
    ("wsd", {"decay_fraction": 0.2, "decay_shape": "linear"}, lambda t: 1.0 if t < 800 else 1 - (t - 800) / 199),
    (
        "wsd",
        {"decay_fraction": 0.5, "decay_shape": "1-sqrt", "min_ratio": 0.1},
        lambda t: 1.0 if t < 500 else 0.1 + 0.9 * (1 - math.sqrt((t - 500) / 499)),
    ),
    (
        "piecewise_linear",
        {"points": [[0.0, 0.2], [0.23, 1.0], [1.0, 0.07]]},
        lambda t: 0.2 + 0.8 * t / 230 if t < 230 else 1 - 0.93 * (t - 230) / 770,
    ),
    (
        "piecewise_linear",
        {"points": [[0.5, 1.0], [0.75, 0.5]]},
        lambda t: 1.0 if t < 500 else (1 - 0.5 * (t - 500) / 250 if t < 750 else 0.5),
    ),
]


def test_piecewise_linear_is_airbench94s_get_lr_float_for_float():
    """legacy/airbench94.py's LambdaLR, transcribed: warmup int(0.23 T) steps from 0.2, then to 0.07."""
    total = 476  # ceil(48 x 9.9)

    def get_lr(step):
        warm = int(total * 0.23)
        if step < warm:
            frac = step / warm
            return 0.2 * (1 - frac) + 1.0 * frac
        frac = (step - warm) / (total - warm)
        return 1.0 * (1 - frac) + 0.07 * frac

    f = build_schedule("piecewise_linear", total, points=[[0.0, 0.2], [0.23, 1.0], [1.0, 0.07]])
    assert [f(t) for t in range(total + 1)] == [get_lr(t) for t in range(total + 1)]


@pytest.mark.parametrize("name,kwargs,reference", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_schedule_matches_its_formula(name, kwargs, reference):
    f = build_schedule(name, T, **kwargs)
    for t in STEPS:
        assert f(t) == pytest.approx(reference(t), rel=1e-9, abs=1e-12), (name, t)


@pytest.mark.parametrize("T_", [20, 37, 1000])
@pytest.mark.parametrize("pct", [0.25, 0.3])
def test_onecycle_is_torchs_onecyclelr_step_for_step(T_, pct):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    ref = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=1.0, total_steps=T_, pct_start=pct, div_factor=25.0, final_div_factor=1e4
    )
    f = build_schedule("onecycle", T_, pct_start=pct, div_factor=25.0, final_div_factor=1e4)
    for t in range(T_):
        assert f(t) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9, abs=1e-12), t
        opt.step()
        if t < T_ - 1:
            ref.step()
    assert f(T_ - 1) == pytest.approx(1 / (25 * 1e4))


@pytest.mark.parametrize("T_", [10, 101, 1000])
def test_wsd_end_conventions(T_):
    last = build_schedule("wsd", T_, decay_fraction=0.3)
    after = build_schedule("wsd", T_, decay_fraction=0.3, end_at="after_run")
    assert last(T_ - 1) == 0.0 and last(T_ - 2) > 0  # the floor is trained, once
    assert after(T_ - 1) > 0 and after(T_) == 0.0  # modded-nanogpt: the last trained step is above it


def test_cosine_restarts_defaults_tile_the_run(make_cfg):
    for T_ in (300, 1000, 7001):
        cfg = make_cfg(["scheduler=cosine_restarts", f"trainer.max_steps={T_}"])
        f = build_schedule_from_config(cfg.scheduler, T_)
        assert f(T_ - 1) < 1e-3, (T_, f(T_ - 1))  # ends at the floor, not midway down a period
    assert build_schedule("cosine_restarts", 700)(699) < 1e-3


def test_every_schedule_is_tested_and_has_a_yaml():
    from optbench.confdir import description, group_options

    assert {c[0] for c in CASES} | {"plateau"} == set(SCHEDULES)
    assert set(group_options("scheduler")) == set(SCHEDULES)
    for name in SCHEDULES:
        assert description("scheduler", name), name


@pytest.mark.parametrize("name", sorted(set(SCHEDULES) - {"plateau"}))
def test_every_yaml_composes_and_builds(make_cfg, name):
    cfg = make_cfg([f"scheduler={name}", "trainer.max_steps=300"])
    validate_schedule_config(cfg.scheduler, 300, metric=cfg.task.metric, eval_every=cfg.trainer.eval_every)
    f = build_schedule_from_config(cfg.scheduler, 300)
    values = [f(t) for t in range(300)]
    assert all(0 <= v <= 1 + 1e-12 for v in values)
    # with the yaml defaults, every schedule but onecycle starts at the base lr
    assert values[0] == pytest.approx(1.0 if name != "onecycle" else 1 / 25)


def test_warmup_composes_with_any_schedule():
    w = 100
    inner = build_schedule("cosine", T - w, min_ratio=0.0)
    f = build_schedule("cosine", T, warmup_steps=w)
    for t in range(w):
        assert f(t) == pytest.approx((t + 1) / w)
    for t in (w, w + 1, 500, 999):
        assert f(t) == pytest.approx(cos_half((t - w) / (T - w)))
        assert f(t) == pytest.approx(inner(t - w))
    # a fraction means the same thing
    g = build_schedule("wsd", T, warmup_fraction=0.1, decay_fraction=0.5)
    assert [g(t) for t in (0, 49, 99, 100, 549, 550, 775)] == pytest.approx(
        [0.01, 0.5, 1.0, 1.0, 1.0, 1.0, 1 - 225 / 449]
    )  # the cooldown ends at the last step, 449 after it starts
    # a schedule that does not start at 1 is ramped towards its own first value
    h = build_schedule("onecycle", T, warmup_steps=10, div_factor=4.0)
    assert h(4) == pytest.approx(0.5 * 0.25)


def plateau_reference(values, mode, factor, patience, threshold):
    """Reduce-on-plateau written out: relative threshold, patience counted in evaluations."""
    best, bad, m, out = None, 0, 1.0, []
    for v in values:
        better = best is None or (v > best * (1 + threshold) if mode == "max" else v < best * (1 - threshold))
        if better:
            best, bad = v, 0
        else:
            bad += 1
        if bad > patience:
            m, bad = m * factor, 0
        out.append(m)
    return out


@pytest.mark.parametrize("mode", ["max", "min"])
def test_plateau_cuts_when_the_metric_stalls(mode):
    metric = [0.1, 0.2, 0.3, 0.3, 0.3, 0.3, 0.35, 0.35, 0.35, 0.35, 0.35, 0.35, 0.35]
    if mode == "min":
        metric = [1 - v for v in metric]
    f = build_schedule("plateau", T, mode=mode, factor=0.5, patience=2, threshold=1e-4)
    got = []
    for v in metric:
        f.observe(v)
        got.append(f(0))
    assert got == pytest.approx(plateau_reference(metric, mode, 0.5, 2, 1e-4))
    assert got[2] == 1.0 and got[5] == 0.5 and got[-1] == 0.5**3  # it did react, more than once


def test_plateau_keeps_observe_under_warmup():
    f = build_schedule("plateau", T, warmup_steps=10, factor=0.1, patience=0)
    assert f(4) == pytest.approx(0.5)
    f.observe(1.0)
    f.observe(0.5)  # worse in mode max -> cut at once (patience 0)
    assert f(50) == pytest.approx(0.1)
    assert f(4) == pytest.approx(0.05)


def test_plateau_in_the_loop_reduces_lr(run_train):
    """Trainer.evaluate feeds the metric: with patience 0 and a metric that cannot keep
    improving at lr ~ 0, the lr written to metrics.jsonl drops below the base lr."""
    import json

    summary, run_dir = run_train(
        [
            "optimizer=sgd",
            "optimizer.lr=1e-9",
            "scheduler=plateau",
            "scheduler.patience=0",
            "scheduler.factor=0.5",
            "scheduler.threshold=100",
            "trainer.max_steps=8",
            "trainer.eval_every=2",
            "trainer.log_every=1",
            "trainer.batch_size=16",
            "data.n_train=64",
            "data.n_test=200",
        ]
    )
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    lrs = [next(iter(x["lr"].values())) for x in lines if x.get("type") == "train"]
    assert lrs[0] == pytest.approx(1e-9)
    # threshold 100 (relative): no evaluation can count as an improvement after the first,
    # so each later evaluation (steps 4, 6) halves the lr
    assert lrs[-1] == pytest.approx(1e-9 * 0.25)
    assert summary["status"] == "completed"


@pytest.mark.parametrize("rule,expected", [("none", 1.0), ("linear", 4.0), ("sqrt", 2.0)])
def test_lr_scaling_rules(rule, expected):
    cfg = {"lr": 0.1, "lr_scaling": rule, "reference_batch_size": 128}
    assert lr_scale(cfg, 512) == pytest.approx(expected)
    assert resolve_lr(cfg, 512) == pytest.approx(0.1 * expected)
    assert lr_scale({"lr": 0.1}, 512) == 1.0  # keys absent: no scaling


def test_scaled_lr_is_recorded_in_config_and_summary(run_train):
    import yaml

    summary, run_dir = run_train(
        [
            "optimizer=sgd",
            "optimizer.lr=0.02",
            "optimizer.lr_scaling=sqrt",
            "optimizer.reference_batch_size=16",
            "trainer.batch_size=64",
            "trainer.max_steps=2",
            "data.n_train=128",
            "data.n_test=32",
        ]
    )
    expected = 0.02 * math.sqrt(64 / 16)
    assert list(summary["lr_by_role"].values()) == pytest.approx([expected] * len(summary["lr_by_role"]))
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    by_role = list(cfg["resolved"]["lr_by_role"].values())
    assert by_role == pytest.approx([expected] * len(by_role))
    assert cfg["resolved"]["lr_scale"] == pytest.approx(2.0)


def test_momentum_schedule_ramps_param_group_keys():
    p = torch.nn.Parameter(torch.zeros(2))
    sgd = torch.optim.SGD([p], lr=0.1, momentum=0.5)
    adam = torch.optim.AdamW([p], lr=0.1, betas=(0.9, 0.99))
    ramp = MomentumSchedule("momentum", 0.85, 0.95, 300)
    for t, v in ((0, 0.85), (150, 0.90), (300, 0.95), (1000, 0.95)):
        assert ramp.apply(sgd, t) == pytest.approx(v)
        assert sgd.param_groups[0]["momentum"] == pytest.approx(v)
    ramp.apply(adam, 10)  # no momentum key: left alone
    assert adam.param_groups[0]["betas"] == (0.9, 0.99)
    MomentumSchedule("betas[0]", 0.8, 0.9, 100, shape="cosine").apply(adam, 50)
    assert adam.param_groups[0]["betas"] == pytest.approx((0.8 + 0.1 * (1 - cos_half(0.5)), 0.99))
    # roles: only the named groups change
    two = torch.optim.SGD(
        [{"params": [p], "role": "matrix"}, {"params": [torch.nn.Parameter(torch.zeros(1))], "role": "scalar"}],
        lr=0.1,
        momentum=0.5,
    )
    MomentumSchedule("momentum", 0.85, 0.95, 10, roles=["matrix"]).apply(two, 10)
    assert [g["momentum"] for g in two.param_groups] == pytest.approx([0.95, 0.5])


def test_momentum_schedule_in_the_loop(make_cfg, tmp_path):
    from optbench.train.loop import Trainer

    cfg = make_cfg(
        [
            "optimizer=nesterov",
            "+optimizer.momentum_schedule={key:momentum,start:0.5,end:0.9,steps:4}",
            "trainer.max_steps=6",
            "trainer.batch_size=16",
            "data.n_train=64",
            "data.n_test=32",
        ]
    )
    trainer = Trainer(cfg, tmp_path / "run")
    for t, v in ((0, 0.5), (1, 0.6), (2, 0.7), (4, 0.9), (5, 0.9)):
        trainer.set_lr(t)
        assert [g["momentum"] for g in trainer.optimizer.param_groups] == pytest.approx(
            [v] * len(trainer.optimizer.param_groups)
        )


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["scheduler.warmup_steps=500", "trainer.max_steps=100"], "longer than the run"),
        (["scheduler=wsd", "scheduler.decay_fraction=1.5"], "decay_fraction=1.5"),
        (["scheduler=wsd", "scheduler.decay_fraction=-0.1"], "decay_fraction=-0.1"),
        (["scheduler=wsd", "scheduler.decay_shape=square"], "valid choices: 1-sqrt, cosine, linear"),
        (["scheduler=wsd", "scheduler.end_at=end"], "end_at='end' is invalid; valid choices: after_run, last_step"),
        (["scheduler=onecycle", "scheduler.end_at=T"], "end_at='T' is invalid; valid choices: after_run, last_step"),
        (["scheduler=cosine", "+scheduler.gamma=0.5"], "unknown key(s) ['gamma'] for scheduler 'cosine'"),
        (["scheduler=plateau", "task.metric=null"], "needs an evaluation metric"),
        (["scheduler=plateau", "trainer.eval_every=1000", "trainer.max_steps=100"], "evaluates only at the end"),
        (["scheduler=multistep", "scheduler.milestones=[50,75]"], "fractions of the run"),
        (["scheduler=piecewise_linear", "scheduler.points=[[0,1],[0.5,2],[0.4,0]]"], "scheduler.points="),
        (["scheduler=piecewise_linear", "scheduler.points=[[0,1,2]]"], "[position, multiplier] pairs"),
        (["scheduler.warmup_steps=10", "scheduler.warmup_fraction=0.1"], "set one of them"),
        (["optimizer.lr_scaling=cubic"], "valid choices: none, linear, sqrt"),
        (["optimizer.lr_scaling=sqrt"], "needs optimizer.reference_batch_size"),
        (["+optimizer.momentum_schedule={key:beta,start:0.8,end:0.9,steps:10}"], "momentum_schedule.key='beta'"),
        (
            ["+optimizer.momentum_schedule={key:momentum,start:0.8,end:0.9,steps:10,roles:[hidden]}"],
            "unknown role(s) ['hidden']",
        ),
        (["+optimizer.momentum_schedule={key:momentum,start:0.8,end:1.5,steps:10}"], "momentum_schedule.end=1.5"),
    ],
)
def test_bad_schedule_input_is_one_line_before_training(make_cfg, overrides, message):
    from optbench.config import validate

    cfg = make_cfg(overrides)
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_build_schedule_rejects_unknown_names_and_keys():
    with pytest.raises(ConfigError, match="valid choices: .*wsd"):
        build_schedule("trapezoid", 10)
    with pytest.raises(ConfigError, match="valid keys: .*decay_fraction"):
        build_schedule("wsd", 10, cooldown=0.2)


def test_schedule_verb_plots_the_curve(tmp_path, data_root):
    from tests.conftest import optbench_cli

    out = tmp_path / "wsd.png"
    r = optbench_cli(
        "schedule", "--plot", "--out", str(out), "scheduler=wsd", "trainer.max_steps=1000", "scheduler.warmup_steps=100"
    )
    assert r.returncode == 0, r.stderr
    assert f"wrote {out}" in r.stdout
    # step 900: decay runs from 100 + 0.8 x 900 = 820 to the last step 999 (179 steps) -> 1 - 80/179
    assert "step     900  x0.5531" in r.stdout and "step     999  x0  " in r.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_schedule_verb_bad_input_is_one_line(capsys):
    from optbench.cli import main

    with pytest.raises(SystemExit) as e:
        main(["schedule", "scheduler=wsd", "scheduler.decay_shape=cubic"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "decay_shape='cubic'" in err


def test_plateau_follows_the_configured_metric(make_cfg, tmp_path):
    """scheduler.metric=val_acc: the schedule reacts to the validation split, not the test set."""
    import json

    from optbench.errors import ConfigError
    from optbench.train.loop import Trainer

    common = [
        "scheduler=plateau",
        "trainer.max_steps=6",
        "trainer.eval_every=2",
        "trainer.batch_size=16",
        "data.n_train=64",
        "data.n_test=200",
        "data.val_split=16",
    ]
    trainer = Trainer(make_cfg([*common, "scheduler.metric=val_acc"]), tmp_path / "run")
    seen = []
    trainer.schedule.observe = seen.append
    trainer.run()
    evals = [
        json.loads(x)
        for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
        if json.loads(x)["type"] == "eval"
    ]
    assert seen == [e["val_acc"] for e in evals]
    assert seen != [e["test_acc"] for e in evals]

    with pytest.raises(ConfigError, match="scheduler.metric='val_bleu'.*test_acc"):
        Trainer(make_cfg([*common, "scheduler.metric=val_bleu"]), tmp_path / "bad").run()


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ["optimizer=adamw", "+optimizer.momentum_schedule={key:momentum,start:0.8,end:0.9,steps:4}"],
            "optimizer=adamw's param groups have no 'momentum'; valid choices: betas[0], betas[1]",
        ),
        (
            ["optimizer=nesterov", "+optimizer.momentum_schedule={key:'betas[0]',start:0.8,end:0.9,steps:4}"],
            "param groups have no 'betas'; valid choices: momentum",
        ),
        (
            [
                "optimizer=nesterov",
                "+optimizer.momentum_schedule={key:momentum,start:0.8,end:0.9,steps:4,roles:[embedding]}",
            ],
            "no param group of optimizer=nesterov has a role in ['embedding']",
        ),
    ],
)
def test_momentum_schedule_that_would_change_nothing_is_refused(make_cfg, tmp_path, overrides, message):
    """Issue 12 #7: a schedule on a key no param group has was ignored but recorded as applied."""
    from optbench.train.loop import Trainer

    cfg = make_cfg(
        [
            *overrides,
            "trainer.max_steps=6",
            "trainer.batch_size=16",
            "data.n_train=64",
            "data.n_test=32",
            "model.widths=[4,8,8]",
        ]
    )
    with pytest.raises(ConfigError) as e:
        Trainer(cfg, tmp_path / "run")
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "run").exists()


def test_schedule_plot_without_a_suffix_says_the_file_it_wrote(tmp_path, capsys, data_root):
    """--out X wrote X.png but printed `wrote X`."""
    from optbench.commands.schedule import main

    main(["--plot", "--out", str(tmp_path / "X"), "trainer.max_steps=20"])
    assert f"wrote {tmp_path / 'X.png'}\n" in capsys.readouterr().out
    assert (tmp_path / "X.png").exists() and not (tmp_path / "X").exists()
