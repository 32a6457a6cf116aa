# One entry point for every task. Each target installs what it needs into .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
STAGE  ?= dev
PACKAGE_DIR ?= build/$(STAGE)

.PHONY: help install run test test-unit test-integration test-e2e bench lint vendor package deploy check clean

help:
	@echo "make run    - API + worker on an embedded AWS (moto server on 127.0.0.1)"
	@echo "make test   - install into .venv, then run every test"
	@echo "make bench  - engine benchmark (writes docs/performance.md)"
	@echo "make lint   - ruff"
	@echo "make vendor - vendor/bin/ffmpeg (static), vendor/lib/libsndfile and build/layers/deno-layer.zip for Lambda"
	@echo "make check  - offline deploy checks (chalice package; cfn-lint, parliament, checkov, zizmor, actionlint; zip, layer and size limits)"
	@echo "make package STAGE=prod / make deploy STAGE=prod"

$(STAMP): requirements.txt requirements-cli.txt requirements-dev.txt requirements-lock.txt pyproject.toml
	@test -x $(PY) || { $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || \
		{ echo "Python 3.11+ is needed to create $(VENV); try: make $(MAKECMDGOALS) PYTHON=python3.11" >&2; exit 1; }; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c requirements-lock.txt
	@# Editable: `audio-stitch` (in $(VENV)/bin) runs this checkout from any directory; the pinned
	@# setuptools above builds it (no build isolation, so no unpinned download).
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

install: $(STAMP)

run: $(STAMP)
	@# --exit-with-parent: if make itself is killed (e.g. by `timeout`), the stack stops with it.
	$(PY) -m audio_stitch run --stage $(STAGE) --exit-with-parent

test: $(STAMP)
	$(PY) -m pytest

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit

test-integration: $(STAMP)
	$(PY) -m pytest tests/integration

test-e2e: $(STAMP)
	$(PY) -m pytest tests/e2e

bench: $(STAMP)
	$(PY) -m bench

lint: $(STAMP)
	$(VENV)/bin/ruff check .

vendor: $(STAMP)
	$(PY) scripts/vendor_ffmpeg.py
	$(PY) scripts/deno_layer.py

package: vendor
	$(PY) scripts/deploy.py package --stage $(STAGE) --out $(PACKAGE_DIR)

deploy: vendor
	$(PY) scripts/deploy.py deploy --stage $(STAGE)

# checkov pins boto3 1.35 & co: it gets a virtualenv of its own.
CHECKOV_STAMP := $(VENV)/tools/checkov/.installed
$(CHECKOV_STAMP): requirements-checkov.txt | $(STAMP)
	@test -x $(VENV)/tools/checkov/bin/python || $(PY) -m venv $(VENV)/tools/checkov
	$(VENV)/tools/checkov/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-checkov.txt
	@touch $@

check: vendor $(CHECKOV_STAMP)
	$(PY) scripts/deploy.py check --stage prod --out build/check

clean:
	rm -rf $(VENV) build vendor/bin vendor/lib .pytest_cache
