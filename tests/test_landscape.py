"""`optbench landscape`: the test functions (gradients by autograd vs closed forms written here,
known minima), every registered optimizer on every function through build_optimizer, and the
pictures (real PNG / GIF files)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from optbench.commands.landscape import parse_keys
from optbench.errors import ConfigError
from optbench.landscape.functions import FUNCTIONS
from optbench.landscape.plot import plot
from optbench.landscape.run import PointModel, compare, run_trajectory, steps_to_tolerance, table

C, S = math.cos(math.pi / 6), math.sin(math.pi / 6)

# closed-form gradients, derived by hand independently of the module's code
GRADIENTS = {
    "rosenbrock": lambda x, y: (-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)),
    "beale": lambda x, y: (
        2 * (1.5 - x + x * y) * (y - 1)
        + 2 * (2.25 - x + x * y**2) * (y**2 - 1)
        + 2 * (2.625 - x + x * y**3) * (y**3 - 1),
        2 * (1.5 - x + x * y) * x + 2 * (2.25 - x + x * y**2) * 2 * x * y + 2 * (2.625 - x + x * y**3) * 3 * x * y**2,
    ),
    "booth": lambda x, y: (2 * (x + 2 * y - 7) + 4 * (2 * x + y - 5), 4 * (x + 2 * y - 7) + 2 * (2 * x + y - 5)),
    "himmelblau": lambda x, y: (
        4 * x * (x * x + y - 11) + 2 * (x + y * y - 7),
        2 * (x * x + y - 11) + 4 * y * (x + y * y - 7),
    ),
    "rastrigin": lambda x, y: (
        2 * x + 20 * math.pi * math.sin(2 * math.pi * x),
        2 * y + 20 * math.pi * math.sin(2 * math.pi * y),
    ),
    # f = 0.5 (u^2 + 50 v^2), u = Cx + Sy, v = -Sx + Cy
    "quadratic": lambda x, y: (
        (C * x + S * y) * C + 50 * (-S * x + C * y) * (-S),
        (C * x + S * y) * S + 50 * (-S * x + C * y) * C,
    ),
    "saddle": lambda x, y: (2 * x, -2 * y),
}


def autograd_grad(fn, x, y):
    xy = torch.tensor([x, y], dtype=torch.float64, requires_grad=True)
    fn(xy).backward()
    return xy.grad.tolist()


def test_every_function_has_a_reference_gradient():
    assert set(GRADIENTS) == set(FUNCTIONS)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_gradients_match_closed_forms(name):
    fn = FUNCTIONS[name]
    rng = np.random.default_rng(0)
    for x, y in [fn.start, *rng.uniform(-2, 2, size=(5, 2))]:
        assert autograd_grad(fn, x, y) == pytest.approx(GRADIENTS[name](x, y), rel=1e-10, abs=1e-10)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_minima_have_the_known_value_and_zero_gradient(name):
    fn = FUNCTIONS[name]
    for point in fn.minima + fn.critical_points:
        value = float(fn(torch.tensor(point, dtype=torch.float64)))
        # Himmelblau's three irrational minima are known to 6 decimals: gradient ~1e-5 there
        assert value == pytest.approx(fn.min_value if fn.minima else 0.0, abs=1e-9)
        assert autograd_grad(fn, *point) == pytest.approx([0.0, 0.0], abs=2e-4)
    if fn.minima:  # and they are minima: the start is worse, small moves do not improve
        x0, y0 = fn.minima[0]
        f0 = float(fn(torch.tensor(fn.minima[0], dtype=torch.float64)))
        for dx, dy in ((1e-3, 0), (0, 1e-3), (-1e-3, 1e-3)):
            assert float(fn(torch.tensor([x0 + dx, y0 + dy], dtype=torch.float64))) > f0
        assert float(fn(torch.tensor(fn.start, dtype=torch.float64))) > f0


def registered_optimizers() -> list[str]:
    from optbench.confdir import group_options
    from optbench.optim import OPTIMIZERS

    # every yaml but custom, which takes its class on the command line (optimizer.target=...)
    return [n for n in sorted(OPTIMIZERS) if n in group_options("optimizer") and OPTIMIZERS[n].target is not None]


def test_every_optimizer_on_every_function_draws_the_picture(tmp_path):
    names = registered_optimizers()
    skipped = {}
    for fname, fn in FUNCTIONS.items():
        settings = parse_keys([f"function={fname}", f"optimizer={','.join(names)}", "steps=3", "lr=1e-3"])
        trajectories = compare(fn, settings, log=lambda line: None)
        for t in trajectories:
            if t.status == "skipped":
                skipped[t.optimizer] = t.note
            else:
                assert len(t.path) == 4 and t.status == "ok", (fname, t.optimizer, t.status)
                assert t.path[-1] != t.path[0], (fname, t.optimizer)  # it moved
        out = plot(fn, trajectories, tmp_path / f"{fname}.png", fname)
        with Image.open(out) as im:
            assert im.format == "PNG" and im.size[0] > 800
        text = table(fn, trajectories, 1e-2)
        assert all(n in text for n in names)
    # elementwise and matrix optimizers alike take a 1x2 point; a skip must say why
    assert {"sgd", "momentum", "adam", "adamw", "lion", "sf_adamw", "lbfgs", "muon"} & set(skipped) == set()
    assert all(note for note in skipped.values())


def test_sgd_step_is_the_plain_gradient_step_with_no_weight_decay():
    fn = FUNCTIONS["booth"]
    lr = 0.01
    t = run_trajectory(fn, "sgd", lr, 2)
    x, y = fn.start
    gx, gy = GRADIENTS["booth"](x, y)
    x1, y1 = x - lr * gx, y - lr * gy
    gx, gy = GRADIENTS["booth"](x1, y1)
    assert t.path[1] == pytest.approx((x1, y1), rel=1e-12)
    assert t.path[2] == pytest.approx((x1 - lr * gx, y1 - lr * gy), rel=1e-12)


def test_point_is_a_matrix_role_with_weight_decay_off():
    from optbench.landscape.run import build_point_optimizer

    opt = build_point_optimizer("adamw", PointModel((0.0, 0.0)), 0.1)
    assert [(g["role"], g["weight_decay"]) for g in opt.param_groups] == [("matrix", 0.0)]


def test_lbfgs_uses_its_closure_and_solves_a_quadratic():
    t = run_trajectory(FUNCTIONS["booth"], "lbfgs", 1.0, 5)
    assert FUNCTIONS["booth"].nearest_minimum(t.final)[1] < 1e-6
    assert steps_to_tolerance(FUNCTIONS["booth"], t, 1e-3) <= 5


def test_gradient_noise_is_seeded_and_changes_the_path():
    fn = FUNCTIONS["quadratic"]
    clean = run_trajectory(fn, "sgd", 0.01, 5)
    a = run_trajectory(fn, "sgd", 0.01, 5, noise=0.5, seed=1)
    b = run_trajectory(fn, "sgd", 0.01, 5, noise=0.5, seed=1)
    assert a.path == b.path and a.path != clean.path
    # the first step differs from the clean one by exactly lr x the first noise draw
    draw = torch.randn((1, 2), generator=torch.Generator().manual_seed(1), dtype=torch.float64).view(2)
    delta = np.subtract(a.path[1], clean.path[1])
    assert delta == pytest.approx((-0.01 * 0.5 * draw).tolist(), rel=1e-9)


def test_himmelblau_distance_is_to_the_nearest_of_four_minima():
    fn = FUNCTIONS["himmelblau"]
    point, dist = fn.nearest_minimum((-3.7, -3.2))
    assert point == (-3.779310, -3.283186) and dist == pytest.approx(math.hypot(0.07931, 0.083186))


def test_optimizer_that_cannot_step_is_skipped_with_a_note(monkeypatch):
    import optbench.landscape.run as landscape

    def refuse(name, model, lr):
        raise ValueError("needs a 4-D tensor")

    monkeypatch.setattr(landscape, "build_point_optimizer", refuse)
    lines = []
    settings = parse_keys(["function=booth", "optimizer=sgd", "steps=2", "lr=0.1"])
    (t,) = compare(FUNCTIONS["booth"], settings, log=lines.append)
    assert t.status == "skipped" and "needs a 4-D tensor" in lines[0]
    assert "skipped: ValueError: needs a 4-D tensor" in table(FUNCTIONS["booth"], [t], 1e-2)


@pytest.mark.parametrize(
    "keys,message",
    [
        (["function=sphere", "optimizer=sgd"], "unknown function 'sphere'; valid choices: beale, booth"),
        (["function=booth", "optimizer=sgd,adamz"], "unknown optimizer 'adamz'"),
        (["function=booth"], "name the optimizers"),
        (["function=booth", "optimizer=sgd", "steps=0"], "steps='0' is invalid"),
        (["function=booth", "optimizer=sgd", "start=[1]"], "start='[1]' is invalid"),
        (["function=booth", "optimizer=sgd", "momentum=0.9"], "unknown key 'momentum'"),
        (["function=booth", "optimizer=sgd", "lr.adamz=0.1"], "unknown optimizer 'adamz'"),
    ],
)
def test_bad_keys_are_one_line(keys, message):
    with pytest.raises(ConfigError) as e:
        parse_keys(keys)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_cli_table_png_and_gif(tmp_path):
    from tests.conftest import optbench_cli

    out = tmp_path / "rosen.png"
    r = optbench_cli(
        "landscape",
        "function=rosenbrock",
        "optimizer=sgd,adam",
        "steps=20",
        "lr.sgd=1e-3",
        "lr.adam=0.05",
        "steps.adam=10",
        "start=[-1,1.5]",
        "--animate",
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines() if line.startswith(("sgd ", "adam "))}
    assert rows["sgd"][1:3] == ["0.001", "20"] and rows["adam"][1:3] == ["0.05", "10"]
    with Image.open(out) as im:
        assert im.format == "PNG"
    with Image.open(out.with_suffix(".gif")) as im:
        assert im.format == "GIF" and im.n_frames > 5


def test_cli_bad_function_is_one_line(capsys):
    from optbench.cli import main

    with pytest.raises(SystemExit) as e:
        main(["landscape", "function=nope", "optimizer=sgd"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "unknown function 'nope'" in err
