"""A run directory saves `git diff HEAD` of the checkout optbench runs from (git_diff.patch) when
the tree is dirty, and config.yaml / summary.json say whether it did; nothing when the tree is
clean or optbench does not run from a checkout (a wheel install). Checked on a temporary git
repository standing in for the source checkout."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

from optbench.train import rundir

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")

TINY = [
    "trainer.device=cpu",
    "trainer.batch_size=32",
    "model.widths=[4,8,8]",
    "data.n_train=128",
    "data.n_test=64",
    "trainer.max_steps=2",
    "trainer.eval_every=2",
    "logger=none",
]


def git(repo, *args):
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A committed git repository with one tracked file, as rundir's source checkout."""
    repo = tmp_path / "src"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "code.py").write_text("x = 1\n")
    git(repo, "add", "code.py")
    git(repo, "commit", "-q", "-m", "first")
    monkeypatch.setattr(rundir, "SOURCE_DIR", repo)
    return repo


def test_dirty_tree_saves_its_diff_and_a_clean_one_removes_it(checkout, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    assert rundir.save_git_diff(run_dir) is None and not (run_dir / rundir.GIT_DIFF).exists()
    assert not rundir.git_commit().endswith("-dirty")

    (checkout / "code.py").write_text("x = 2\n")
    (checkout / "untracked.py").write_text("y = 1\n")  # untracked: not part of `git diff HEAD`
    assert rundir.save_git_diff(run_dir) == rundir.GIT_DIFF
    patch = (run_dir / rundir.GIT_DIFF).read_text()
    assert "-x = 1\n+x = 2\n" in patch and "untracked.py" not in patch
    assert rundir.git_commit().endswith("-dirty")

    git(checkout, "add", "code.py")  # staged changes are uncommitted too
    assert "+x = 2" in (rundir.git_diff() or b"").decode()

    git(checkout, "commit", "-q", "-m", "second")  # clean again: the earlier start's patch goes
    assert rundir.save_git_diff(run_dir) is None and not (run_dir / rundir.GIT_DIFF).exists()


def test_no_checkout_no_diff_and_no_commit(tmp_path, monkeypatch, checkout):
    plain = tmp_path / "site-packages"
    plain.mkdir()
    monkeypatch.setattr(rundir, "SOURCE_DIR", plain)
    assert rundir.git_diff() is None and rundir.git_commit() is None
    # a wheel installed into a virtual environment that sits inside some git work tree: that tree
    # is not optbench's source
    (checkout / "code.py").write_text("x = 3\n")
    inside = checkout / ".venv" / "site-packages"
    inside.mkdir(parents=True)
    monkeypatch.setattr(rundir, "SOURCE_DIR", inside)
    assert rundir.git_diff() is None and rundir.git_commit() is None


@pytest.mark.parametrize("dirty", [True, False])
def test_run_directory_records_the_diff(run_train, checkout, tmp_path, dirty):
    if dirty:
        (checkout / "code.py").write_text("x = 2\n")
    summary, run_dir = run_train(TINY, run_dir=tmp_path / "run")
    expected = rundir.GIT_DIFF if dirty else None
    assert (run_dir / rundir.GIT_DIFF).is_file() is dirty
    assert summary["environment"]["git_diff"] == expected
    assert json.loads((run_dir / "summary.json").read_text())["environment"]["git_diff"] == expected
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["versions"]["git_diff"] == expected
    if dirty:
        assert "+x = 2" in (run_dir / rundir.GIT_DIFF).read_text()
