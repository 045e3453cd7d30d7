#!/usr/bin/env bash
# Wheel CI (`make test-wheel`): what a user gets from `pip install optbench-<ver>.whl`, checked outside
# the checkout. Builds the wheel from the checkout's files, installs it with its core dependencies only
# (no extras) into a fresh virtual environment in a temporary folder, and from an empty directory:
# trains 20 steps of the default task, reports that run, lists the optimizers through `python -m optbench`,
# composes an optimizer from a user's config folder (hydra.searchpath) and checks that a feature whose
# extra is missing (logger=wandb, hydra/launcher=local) stops with one line.
#
#   scripts/ci_wheel.sh            PY=python that builds (default .venv/bin/python: setuptools, build)
#                                  BASE_PYTHON=interpreter of the fresh venv (default python3)
#                                  TORCH_INDEX=<url> as in the Makefile; KEEP=1 keeps the temp folder
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
# a relative path (make passes PY=.venv/bin/python) is the caller's: made absolute before the cd below
case "$PY" in /*) ;; */*) PY="$PWD/$PY" ;; esac
BASE_PYTHON=${BASE_PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-$(sed -n 's/^TORCH_VERSION *:= *//p' "$ROOT/Makefile")}
TORCH_INDEX=${TORCH_INDEX:-}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/optbench-wheel.XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then echo "ci_wheel: keeping $WORK"; else trap 'rm -rf "$WORK"' EXIT; fi
# nothing of the checkout may leak in: no PYTHONPATH, and every command below runs outside it
unset PYTHONPATH
cd "$WORK"
step() { printf 'ci_wheel: %s (%ss)\n' "$1" "$SECONDS"; }
fail() { echo "ci_wheel: FAILED: $*" >&2; exit 1; }

# 1. The wheel, from a copy of the tracked and not-ignored files: a stale build/ or *.egg-info of an
#    editable install never goes into it, and the checkout stays as it was.
step "build the wheel"
mkdir "$WORK/src"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
  | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
  | xargs -0 cp --parents -t "$WORK/src")
# no build isolation: the build backend (setuptools) is the dev environment's, nothing is downloaded
"$PY" -m build --wheel --no-isolation --outdir "$WORK/dist" "$WORK/src" > "$WORK/build.log" 2>&1 \
  || { cat "$WORK/build.log"; fail "wheel build"; }
WHEEL=$(ls "$WORK"/dist/optbench-*.whl)
"$PY" - "$WHEEL" "$ROOT" <<'EOF' || fail "wheel contents"
import sys, zipfile
from pathlib import Path
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
pkg = Path(sys.argv[2]) / "optbench"
want = [f"optbench/{p.relative_to(pkg).as_posix()}" for pattern in ("conf/**/*.yaml", "report/leaderboards/*.csv")
        for p in pkg.glob(pattern)]
missing = sorted(set(want) - names)
if missing:
    sys.exit(f"not in the wheel: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
print(f"ci_wheel: the wheel has all {len(want)} yaml/csv data files")
EOF

# 2. A fresh venv (no system site-packages) with the pinned torch, then the wheel with its core
#    dependencies (at the pins of constraints.txt); torch first, as `make install` does. No .pyc
#    compilation at install time (torch's is most of it; Python compiles what it imports)
step "fresh venv, torch $TORCH_VERSION"
"$BASE_PYTHON" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
pip_install() {
  "$VPY" -m pip install -q --no-compile -c "$ROOT/constraints.txt" "$@" > "$WORK/pip.log" 2>&1 \
    || { grep -v "^WARNING: Location" "$WORK/pip.log"; fail "pip install $*"; }
}
pip_install "torch==$TORCH_VERSION" ${TORCH_INDEX:+--index-url "$TORCH_INDEX"}
step "the wheel and its core dependencies"
pip_install "$WHEEL"
"$VPY" - <<'EOF' || fail "the core install"
import importlib.util, sys
import optbench
assert "site-packages" in optbench.__file__, optbench.__file__
extras = [m for m in ("wandb", "datasets", "huggingface_hub", "tiktoken", "submitit", "sklearn")
          if importlib.util.find_spec(m) is not None]
if extras:  # each belongs to an extra: a core install pulling one in means a core dependency needs it
    sys.exit(f"a core install has {', '.join(extras)}")
print(f"ci_wheel: optbench {optbench.__version__} from {optbench.__file__}, no extras installed")
EOF

# 3. Use it from an empty directory
mkdir "$WORK/user" && cd "$WORK/user"  # empty: Hydra finds conf/ inside the package
step "optbench train trainer.max_steps=20"
"$WORK/venv/bin/optbench" train trainer.max_steps=20 trainer.progress=false > train.log 2>&1 \
  || { cat train.log; fail "optbench train"; }
SUMMARY=$(find outputs -name summary.json | head -1)
[ -n "$SUMMARY" ] || { cat train.log; fail "no summary.json under outputs/"; }
RUN=$(dirname "$SUMMARY")
"$VPY" -c "import json,sys; s=json.load(open(sys.argv[1])); assert s['status']=='completed' and s['steps']==20, s" \
  "$SUMMARY" || fail "the run did not finish 20 steps"
for f in config.yaml metrics.jsonl; do [ -s "$RUN/$f" ] || fail "$RUN/$f missing"; done

step "optbench report $RUN"
"$WORK/venv/bin/optbench" report "$RUN" --name wheel --out report > report.log 2>&1 \
  || { cat report.log; fail "optbench report"; }
for f in table.md table.csv runs.csv; do [ -s "report/wheel/$f" ] || fail "report/wheel/$f missing"; done

step "python -m optbench list optimizers"
"$VPY" -m optbench list optimizers > list.log 2>&1 || { cat list.log; fail "python -m optbench list"; }
grep -q "adamw" list.log || { cat list.log; fail "adamw not listed"; }

step "a user's config folder through hydra.searchpath"
mkdir -p myconf/optimizer
CONF=$("$VPY" -c "import optbench; print(optbench.CONF_DIR)")
sed 's/^name: adamw/name: my_adamw/' "$CONF/optimizer/adamw.yaml" > myconf/optimizer/my_adamw.yaml
"$WORK/venv/bin/optbench" train --cfg job optimizer=my_adamw "hydra.searchpath=[file://$PWD/myconf]" > cfg.log 2>&1 \
  && grep -q "name: my_adamw" cfg.log || { cat cfg.log; fail "optimizer=my_adamw from a user folder"; }

step "a missing extra is one line"
set +e
"$WORK/venv/bin/optbench" train logger=wandb trainer.max_steps=1 > extra.log 2>&1; rc=$?
set -e
[ "$rc" = 2 ] && [ "$(wc -l < extra.log)" = 1 ] && grep -q "pip install 'optbench\[wandb\]'" extra.log \
  || { cat extra.log; fail "logger=wandb without wandb: exit $rc"; }
set +e
"$WORK/venv/bin/optbench" train -m hydra/launcher=local trainer.max_steps=1 > extra.log 2>&1; rc=$?
set -e
[ "$rc" = 2 ] && [ "$(wc -l < extra.log)" = 1 ] && grep -q "pip install 'optbench\[cluster\]'" extra.log \
  || { cat extra.log; fail "hydra/launcher=local without the cluster extra: exit $rc"; }

step "ok"
