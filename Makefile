# mmdopq developer commands. `make test` is the one test command (CI runs it via .ci/run).
#
#   make install    create/refresh $(VENV) with torch, mmcv (compiled ops), mmdet, mmdopq
#   make test       install if needed, then lint, then the test suite (pytest -n 2)
#   make demo       install if needed, then the demo (float / RepQ / DopQ on the reference
#                   Mask R-CNN at W4A4 and W6A6; about 5 min on 2 cores), into work_dirs/demo
#   make benchmark  install if needed, then the full recipe benchmark (hours on a CPU)
#   make test-fast  the test suite only, in the existing $(VENV) (alias: make pytest)
#   make lint       ruff check + ruff format --check
#   make format     ruff format + ruff check --fix
#   make clean      remove caches and build artefacts (keeps $(VENV))

VENV ?= .venv
PY = $(VENV)/bin/python
RUFF = $(VENV)/bin/ruff
LINT_PATHS = setup.py mmdopq tools tests configs benchmarks
# Written by the install target; `make test` re-runs the installer only when this stamp is
# missing (fresh machine, deleted venv) or older than the files that define the environment.
INSTALL_STAMP = $(VENV)/.mmdopq-installed
INSTALL_INPUTS = tools/install.sh setup.py $(wildcard requirements/*.txt)

.PHONY: install test test-fast pytest lint format clean demo benchmark

install:
	VENV=$(abspath $(VENV)) bash tools/install.sh
	touch $(INSTALL_STAMP)

$(INSTALL_STAMP): $(INSTALL_INPUTS)
	$(MAKE) install VENV=$(VENV)

test: $(INSTALL_STAMP)
	$(MAKE) lint VENV=$(VENV)
	# one torch thread per xdist worker: 2 workers x 2 threads thrash 2 cores
	CI=$${CI:-} OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --durations=15 tests

demo: $(INSTALL_STAMP)
	$(PY) -m benchmarks.demo --work-dir work_dirs/demo

benchmark: $(INSTALL_STAMP)
	$(PY) -m benchmarks.bench_recipes

test-fast pytest:
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 tests

lint:
	$(RUFF) check $(LINT_PATHS)
	$(RUFF) format --check $(LINT_PATHS)

format:
	$(RUFF) format $(LINT_PATHS)
	$(RUFF) check --fix $(LINT_PATHS)

clean:
	find $(wildcard mmdopq tools tests configs benchmarks) -name __pycache__ -type d -prune \
		-exec rm -rf {} +
	rm -rf .pytest_cache .ruff_cache .hypothesis build dist *.egg-info
