"""A sweep job's directory is named after its overrides; a long command line must still give a name
the file system accepts (255 bytes on ext4), distinct per job."""

from optbench.dirnames import MAX_NAME, short_dirname


def test_short_names_stay_as_they_are():
    assert short_dirname("optimizer=adamw,seed=0") == "optimizer=adamw,seed=0"


def test_long_names_are_cut_with_a_hash_of_the_whole():
    a = ",".join(f"trainer.key{i}={i}" for i in range(40)) + ",seed=0"
    b = a[:-1] + "1"
    sa, sb = short_dirname(a), short_dirname(b)
    assert len(sa.encode()) <= MAX_NAME and len(sb.encode()) <= MAX_NAME
    assert sa != sb and sa.startswith(a[:100])


def test_non_ascii_is_cut_on_a_character_boundary():
    s = short_dirname("data.root=é" * 100)
    s.encode()  # valid UTF-8
    assert len(s.encode()) <= MAX_NAME


def test_a_sweep_with_a_long_command_line_runs(tmp_path):
    """Before: OSError File name too long from Hydra, a traceback and no run."""
    from tests.conftest import optbench_cli

    sweep = tmp_path / "sweep"
    many = [
        f"trainer.{k}={v}"
        for k, v in (
            ("max_steps", 2),
            ("eval_every", 2),
            ("log_every", 1),
            ("batch_size", 32),
            ("progress", "false"),
            ("divergence_factor", 50.0),
            ("checkpoint_every", 0),
            ("on_bad_checkpoint", "previous"),
            ("peak_flops", 1e12),
            ("grad_clip", 0.0),
        )
    ]
    r = optbench_cli(
        "train",
        "-m",
        "seed=0,1",
        "optimizer=adamw",
        "optimizer.lr=0.001",
        "optimizer.weight_decay=0.0",
        "data.n_train=256",
        "data.n_test=64",
        f"data.root={tmp_path / 'data'}",
        *many,
        f"hydra.sweep.dir={sweep}",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(jobs) == 2 and all((j / "summary.json").exists() for j in jobs)
    assert all(len(j.name.encode()) <= 255 for j in jobs)
