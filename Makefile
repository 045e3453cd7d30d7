# All set-up happens here: a project virtual environment with torch pinned, so a CPU-only
# machine never pulls CUDA packages (PyPI's Linux wheel of the same version is the CUDA build
# on a GPU machine; pass TORCH_INDEX=<url> to pick another build).
VENV        ?= .venv
PYTHON      ?= python3
PY          := $(VENV)/bin/python
OPTBENCH    := $(VENV)/bin/optbench
TORCH_VERSION := 2.13.0
TORCH_INDEX ?=
PYTEST_ARGS ?= -n 2
DEMO_DIR    ?= multirun/demo
# The demo's report goes to an ignored folder, so running it leaves the checkout clean (a tracked
# file rewritten by `make demo` made every later run record git_commit ...-dirty). The tracked copy
# in results/demo/ changes only through `make demo-results`, on purpose, and is then committed.
DEMO_OUT    ?= outputs

.PHONY: install demo demo-results test test-wheel lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==$(TORCH_VERSION) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -c constraints.txt -e '.[all,dev]'
	touch $@

# The embedded default: 3 optimizers x 2 seeds on synthetic CIFAR-10, then the comparison table.
demo: install
	rm -rf $(DEMO_DIR)
	$(OPTBENCH) train -m experiment=demo hydra.sweep.dir=$(DEMO_DIR)
	$(OPTBENCH) report $(DEMO_DIR) --name demo --out $(DEMO_OUT)

# Refresh the tracked results/demo/ from a fresh demo (then review and commit it).
demo-results: demo
	$(OPTBENCH) report $(DEMO_DIR) --name demo --out results

# the tests, then the wheel CI: a wheel of this checkout installed (core only) in a fresh venv elsewhere
test: install
	WANDB_MODE=disabled $(PY) -m pytest -q $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-wheel

test-wheel: install
	PY=$(PY) TORCH_VERSION=$(TORCH_VERSION) TORCH_INDEX=$(TORCH_INDEX) scripts/ci_wheel.sh

# ruff's lint rules and formatting (pyproject.toml [tool.ruff]); .ci/run runs it with the tests
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: install
	$(PY) scripts/bench_overhead.py
	$(PY) scripts/bench_optimizers.py
	$(PY) scripts/bench_cifar_pipeline.py

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
