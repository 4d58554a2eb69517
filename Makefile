# One-command setup and tests. `make test` on a fresh clone creates .venv, installs
# the pinned stack and runs every test; `make setup` only installs (a no-op when
# pyproject.toml and constraints.txt have not changed).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.llmft-installed
# checkov (the chart policy scan, tests/test_checkov.py) pins tabulate<0.10, the project 0.10: its own venv.
CHECKOV_VENV := .venv-checkov
PYTEST_WORKERS ?= 2

.PHONY: setup lint test docs bench chart-files clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0 -c constraints.txt
	$(PY) -m pip install -q --disable-pip-version-check -e '.[train,local,dev]' -c constraints.txt
	touch $(STAMP)

# Lint and type check (a few seconds, the first step of `make test`): ruff over engine, tests and
# benchmarks, mypy over the engine.
lint: setup
	$(VENV)/bin/ruff check
	$(VENV)/bin/ruff format --check
	$(VENV)/bin/mypy

test: setup lint $(CHECKOV_VENV)/.installed
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadgroup

$(CHECKOV_VENV)/.installed: tests/checkov-requirements.txt
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -q --disable-pip-version-check -r tests/checkov-requirements.txt
	touch $@

# The tutorial end to end on this machine (tiny model, embedded S3, CPU): see docs/tutorials/.
demo: setup
	bash docs/tutorials/tutorial-01-local.sh

# Benchmarks (CPU, under 20 minutes): benchmarks/results/latest.{json,md} and PNG charts.
bench: setup
	$(PY) -m benchmarks.run
	$(PY) -m benchmarks.readme

# README's Performance table from benchmarks/results/latest.json (make bench runs it too).
bench-readme: setup
	$(PY) -m benchmarks.readme

# The GPU check (benchmarks/gpu_check.py, <= 8 minutes on one H100/H200). `make gpu-wheels` here builds the
# wheels a bare GPU machine lacks into .whl/; there: pip install --no-deps .whl/*.whl && make gpu-check.
GPU_CHECK_OUT ?= benchmarks/results/gpu
gpu-wheels: setup
	$(PY) -m benchmarks.gpu_wheels

gpu-check:
	python3 -m benchmarks.gpu_check --out $(GPU_CHECK_OUT)

# Regenerate the llm-finetune chart's values.schema.json and preset files from the engine.
chart-files: setup
	$(PY) -m llmft.chart_files charts
	$(PY) -m llmft.tune.chart_files charts

# Regenerate docs/config-reference.md from the fine-tuning config models, docs/settings.md from
# llmft.settings and docs/evaluate-reference.md from the evaluation spec (tests check all are current).
docs: setup
	$(PY) -m llmft config-reference > docs/config-reference.md
	$(PY) -m llmft settings-reference > docs/settings.md
	$(PY) -m llmft evaluate-reference > docs/evaluate-reference.md
	$(PY) -m llmft tune reference > docs/tune-reference.md

clean-venv:
	rm -rf $(VENV)
