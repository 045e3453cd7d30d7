"""Optional dependencies: a feature whose extra is not installed stops with one line naming the extra
(exit 2), and the wheel carries the config tree and leaderboards with only core dependencies required."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from optbench import PACKAGE_DIR
from optbench.errors import ConfigError
from optbench.extras import check, installed, require

ROOT = PACKAGE_DIR.parent


def run_in_process(capsys, *argv):
    from optbench.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def hide(monkeypatch, *modules):
    """Make `import MODULE` fail as if it were not installed (sys.modules[name] = None)."""
    for m in modules:
        monkeypatch.setitem(sys.modules, m, None)


def test_require_names_the_extra(monkeypatch):
    hide(monkeypatch, "wandb")
    assert not installed("wandb")
    with pytest.raises(ConfigError, match=r"^logger=wandb needs the 'wandb' extra: pip install 'optbench\[wandb\]'$"):
        require("wandb", "logger=wandb")
    hide(monkeypatch, "tiktoken", "sklearn")
    with pytest.raises(ConfigError, match=r"^tokenising needs the 'data' extra: pip install 'optbench\[data\]'$"):
        check("tiktoken", "tokenising")
    with pytest.raises(ConfigError, match=r"^task=digits_mlp needs the 'suite' extra"):
        check("sklearn", "task=digits_mlp")


def test_require_returns_an_installed_module():
    import json

    assert require("json", "anything", extra="dev") is json
    assert installed("json") and not installed("optbench_no_such_module_xyz")


def test_a_module_missing_its_own_dependency_names_both(tmp_path, monkeypatch):
    (tmp_path / "obx_brokenmod.py").write_text("import obx_absent_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as e:
        require("obx_brokenmod", "the feature", extra="wandb")
    assert str(e.value) == (
        "the feature needs the 'wandb' extra: pip install 'optbench[wandb]' "
        "(obx_brokenmod could not import obx_absent_dependency)"
    )


def test_train_logger_wandb_without_wandb_is_one_line_before_the_run(monkeypatch, capsys, tmp_path, data_root):
    hide(monkeypatch, "wandb")
    status, _, err = run_in_process(
        capsys, "train", "logger=wandb", "trainer.max_steps=1", f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert status == 2
    assert err == "optbench: error: logger=wandb needs the 'wandb' extra: pip install 'optbench[wandb]'\n"
    assert not (tmp_path / "run").exists()  # refused before Hydra made the run directory


def test_wandb_sink_without_wandb_names_the_extra(monkeypatch, make_cfg, tmp_path):
    from optbench.train.wandb_sink import WandbSink

    cfg = make_cfg(["logger=wandb"])
    hide(monkeypatch, "wandb")
    with pytest.raises(ConfigError, match=r"logger=wandb needs the 'wandb' extra"):
        WandbSink(cfg, tmp_path)


def test_submitit_launcher_without_the_plugin_names_cluster(monkeypatch, capsys, tmp_path):
    hide(monkeypatch, "hydra_plugins.hydra_submitit_launcher")
    status, _, err = run_in_process(
        capsys, "train", "-m", "hydra/launcher=local", "trainer.max_steps=1", f"hydra.sweep.dir={tmp_path / 'sweep'}"
    )
    assert status == 2
    assert err == ("optbench: error: hydra/launcher=local needs the 'cluster' extra: pip install 'optbench[cluster]'\n")


def test_data_fineweb_without_huggingface_hub_names_data(monkeypatch, capsys, tmp_path):
    hide(monkeypatch, "huggingface_hub")
    status, _, err = run_in_process(capsys, "data", "fineweb10B", "--shards", "1", "--root", str(tmp_path / "fw"))
    assert status == 2
    assert err == ("optbench: error: optbench data fineweb10B needs the 'data' extra: pip install 'optbench[data]'\n")
    assert not (tmp_path / "fw").exists()


def test_core_imports_need_no_extra():
    """The modules a core install runs import without any extra (each is imported lazily)."""
    code = (
        "import sys\n"
        "for m in ('wandb', 'datasets', 'huggingface_hub', 'tiktoken', 'submitit', 'sklearn'):\n"
        "    sys.modules[m] = None\n"
        "import optbench.cli, optbench.config, optbench.train.loop, optbench.train.sinks, optbench.report.collect\n"
        "import optbench.data.fineweb, optbench.tune, optbench.listing\n"
        "from optbench.config import compose\n"
        "compose(['logger=jsonl'])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def _build_wheel(tmp_path: Path) -> Path:
    """The wheel of this checkout's package, from a copy (so no build/ or egg-info lands in the checkout)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(PACKAGE_DIR, src / "optbench", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            str(tmp_path / "dist"),
            str(src),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("optbench-*.whl")
    return wheel


@pytest.mark.skipif(not (ROOT / "pyproject.toml").is_file(), reason="needs the source checkout")
def test_wheel_has_the_config_tree_and_core_dependencies_only(tmp_path):
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = next(z.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
        entry_points = next(z.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    data = [
        f"optbench/{p.relative_to(PACKAGE_DIR).as_posix()}"
        for pattern in ("conf/**/*.yaml", "report/leaderboards/*.csv")
        for p in PACKAGE_DIR.glob(pattern)
    ]
    assert len(data) > 90 and "optbench/conf/config.yaml" in data
    assert sorted(set(data) - names) == []
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "optbench = optbench.cli:main" in entry_points
    requires = [line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    core = [r for r in requires if "extra ==" not in r]
    for optional in ("wandb", "datasets", "huggingface", "tiktoken", "submitit", "scikit-learn"):
        assert not any(r.lower().startswith(optional) for r in core), (optional, core)
    extras = {line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Provides-Extra:")}
    assert {"wandb", "data", "cluster", "suite", "dev", "all"} <= extras
