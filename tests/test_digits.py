"""task.kind=digits: the convex optimum against scikit-learn's solver, and the three models train."""

from __future__ import annotations

import pytest
import torch

from optbench.errors import ConfigError

pytest.importorskip("sklearn")


def test_logreg_optimum_matches_scikit_learns_solver():
    """Our float64 L-BFGS minimum of mean CE + l2/2 |W|^2 equals the objective at scikit-learn's own
    multinomial lbfgs solution with C = 1/(n l2) (same objective times C n), to 1e-8."""
    from sklearn.linear_model import LogisticRegression

    from optbench.tasks import digits as d

    x, y = d.load_digits_arrays()
    tx, ty, _, _ = d.split(x, y)
    l2 = 1e-3
    ours, w, b = d.logreg_optimum(tx, ty, l2)
    clf = LogisticRegression(
        C=1.0 / (len(tx) * l2), solver="lbfgs", tol=1e-12, max_iter=100000, fit_intercept=True
    ).fit(tx.numpy(), ty.numpy())
    theirs = d.logreg_objective(torch.from_numpy(clf.coef_), torch.from_numpy(clf.intercept_), tx, ty, l2).item()
    assert abs(ours - theirs) < 1e-8, (ours, theirs)
    assert ours <= theirs + 1e-12  # ours is the tighter of the two
    # the weights agree too (the intercept only up to a common shift, which softmax ignores)
    assert torch.allclose(w, torch.from_numpy(clf.coef_), atol=1e-4)
    shift = b - torch.from_numpy(clf.intercept_)
    assert torch.allclose(shift, shift.mean().expand_as(shift), atol=1e-4)
    # cached: the second call is the same object, not a second solve
    assert d.logreg_optimum(tx, ty, l2)[1] is w
    assert d.objective_key(tx, ty, l2) != d.objective_key(tx, ty, 2 * l2)


def test_split_is_fixed_and_disjoint():
    from optbench.tasks import digits as d

    x, y = d.load_digits_arrays()
    a, b = d.split(x, y), d.split(x, y)
    assert len(a[0]) == 1300 and len(a[2]) == 297
    tx, _, ex, _, vx, _ = d.split(x, y, with_val=True)
    assert (
        len(vx) == 200 and len({tuple(r.tolist()) for r in torch.cat([tx, vx, ex])}) >= 1790
    )  # disjoint (a few duplicate images exist)
    assert torch.equal(a[0], b[0]) and torch.equal(a[3], b[3])


@pytest.mark.parametrize("task,lr", [("digits_logreg", 0.05), ("digits_mlp", 3e-3), ("digits_cnn", 3e-3)])
def test_each_digits_model_learns(run_train, task, lr):
    summary, _ = run_train(
        [
            f"task={task}",
            "optimizer=adamw",
            f"optimizer.lr={lr}",
            "trainer.max_steps=30",
            "trainer.eval_every=30",
            "trainer.eval_at_start=true",
            "trainer.batch_size=64",
        ]
    )
    assert summary["status"] == "completed"
    ev = summary["final_eval"]
    assert ev["test_acc"] > 0.6 and ev["val_acc"] > 0.6  # val: what tune selects on
    if task == "digits_logreg":
        assert 0 < ev["excess_loss"] < 0.2 and summary["optimum"] > 0
        assert abs(ev["objective"] - summary["optimum"] - ev["excess_loss"]) < 1e-12


def test_digits_refuses_bad_values(make_cfg):
    from optbench.config import validate

    for overrides, message in [
        (["task=digits_mlp", "task.model=resnet"], "task.model='resnet'"),
        (["task=digits_logreg", "task.l2=0"], "task.l2=0"),
        (["task=digits_mlp", "trainer.batch_size=5000"], "trainer.batch_size=5000"),
        (["task=digits_mlp", "+model=cnn_small"], "builds its own model"),
    ]:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
            validate(make_cfg(overrides))


def test_optimum_is_cached_on_disk_for_the_next_process(tmp_path, monkeypatch):
    from optbench.tasks import digits as d

    x, y = d.load_digits_arrays()
    tx, ty, _, _ = d.split(x, y)
    value = d.logreg_optimum(tx, ty, 2e-3, tmp_path)[0]
    (path,) = tmp_path.glob("digits_logreg_optimum_*.pt")
    d._OPTIMA.clear()  # a new process: nothing in memory, and no solving

    def no_solve(*a, **k):
        raise AssertionError("solved again instead of reading the cache")

    monkeypatch.setattr("scipy.optimize.minimize", no_solve)
    assert d.logreg_optimum(tx, ty, 2e-3, tmp_path)[0] == value
    saved = torch.load(path, weights_only=True)
    assert saved["key"] == d.objective_key(tx, ty, 2e-3)
