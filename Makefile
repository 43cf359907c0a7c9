# Two commands do all the set-up on a fresh machine:  make book   and   make test
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_STAMP := $(VENV)/.apt-installed
MATHJAX := book/_mathjax/es5/tex-chtml.js
export XLA_PYTHON_CLIENT_PREALLOCATE := false
export PYTHONHASHSEED := 0
# the checkout keeps its cache in data/cache (git-ignored, `make clean`); an installed package
# uses the per-user cache folder (xmodality_lite.data.dataset.default_cache_dir)
export XMODALITY_CACHE ?= $(CURDIR)/data/cache
# tests in parallel, one file per worker (a file's fixtures, e.g. the book build, are built once):
# on 2 cores the book build runs beside the rest of the suite, started first (tests/conftest.py
# orders the files; --no-loadscope-reorder keeps that order). PYTEST_PARALLEL= runs serially.
PYTEST_PARALLEL ?= -n auto --maxprocesses 4 --dist loadfile --no-loadscope-reorder
# every process the targets below start runs under TCMalloc where it is installed (LD_PRELOAD,
# from xmodality_lite.allocator; expanded when a recipe runs, after `env`); XMODALITY_MALLOC=glibc: glibc's
MALLOC_ENV = $(shell $(BIN)/python -m xmodality_lite.allocator --env)

.PHONY: all env book test test-fast lint bench checkpoints clean help

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

all: test book

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[book,dev]"
	touch $@

# Debian packages, where apt-get exists: Chromium (browser test of the built book) and TCMalloc
# (xmodality_lite.allocator: XLA's CPU runtime 1.2-1.6x faster, the same numbers). Then the
# Jupyter kernel, started under TCMalloc where it is installed.
$(APT_STAMP): Makefile | $(STAMP)
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="chromium fonts-liberation"; \
	$(BIN)/python -c "import sys; from xmodality_lite import allocator; sys.exit(allocator.tcmalloc_library() is None)" \
	  || missing="$$missing libtcmalloc-minimal4"; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "note: cannot apt-get $$missing: the browser test is skipped without chromium, and glibc's malloc is used without TCMalloc"; fi; \
	fi
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 $$($(BIN)/python -m xmodality_lite.allocator --kernel-env) >/dev/null
	touch $@

# MathJax 3 served locally so equations render offline (install facts: JB1 uses a CDN by default).
$(MATHJAX):
	@mkdir -p book/_mathjax
	cd book/_mathjax && npm pack --silent mathjax@3.2.2 >/dev/null && tar -xzf mathjax-3.2.2.tgz \
	  && rm -rf es5 && mv package/es5 es5 && rm -rf package mathjax-3.2.2.tgz
	@test -f $@

env: $(STAMP) $(APT_STAMP) $(MATHJAX)  ## create/refresh .venv with everything

book: env  ## execute every notebook (default profile: cpu) and build the HTML book
	$(MALLOC_ENV) $(BIN)/jupyter-book build --all . --builder html
	@echo "Open _build/html/index.html"

test: env  ## the test suite, the notebooks at the smoke profile, and the built book's checks
	$(MALLOC_ENV) XMODALITY_PROFILE=smoke $(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_PARALLEL) --durations 15 tests

test-fast: env  ## unit tests only (no notebooks, no book build)
	$(MALLOC_ENV) XMODALITY_PROFILE=smoke $(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_PARALLEL) -m "not book" tests

lint: env  ## ruff
	$(BIN)/ruff check xmodality_lite tests benchmarks book/_ext

bench: env  ## measure speed and memory; writes benchmarks/RESULTS.md
	$(MALLOC_ENV) $(BIN)/python -m benchmarks.run_all

# XMODALITY_ATTENTION=ours and XMODALITY_XLA_OPTIONS=off: the attention kernel and the XLA
# compilation the shipped models were trained with, so that a retraining reproduces them bit for
# bit whatever this machine would choose. Not the U-Net: its GroupNorm (models.normalization)
# came after it was trained and rounds differently, so its retraining is not bit for bit.
checkpoints: env  ## train the four shipped cpu-profile models on the phantom and record their metrics (about 1.5 h), refresh the README
	$(MALLOC_ENV) XMODALITY_PROFILE=cpu XMODALITY_ATTENTION=ours XMODALITY_XLA_OPTIONS=off $(BIN)/python -m xmodality_lite train-shipped --out xmodality_lite/checkpoints
	$(BIN)/python tools/update_readme.py

clean:  ## remove build outputs (keeps .venv)
	rm -rf _build data/cache .pytest_cache
