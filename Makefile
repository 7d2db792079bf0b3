# attncourse: two commands on a fresh machine.
#   make book   install what is needed, then build the whole book (every chapter executed)
#   make test   install what is needed, then run every test (unit tests + every chapter under nbval)
# Both install into ./.venv, once (again only when pyproject.toml or constraints.txt change).
# Nothing here writes into chapters/: generated notebooks go to build/notebooks, the book to build/book.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Torch's CPU threads (GNU OpenMP) spin-wait after each parallel region before they sleep. On a
# shared 2-core machine that spinning steals the CPU from the other process: one chapter training
# run took 15x longer beside another torch process (tools/contention.py). A short spin keeps a
# quiet machine's speed (within about 5 %) and makes a shared one about 2.4x slower instead of 15x.
# It changes no result (the thread count, which does, is left alone). Kernels started by `book`,
# `test` and `lab` inherit it; set your own value in the environment to override it.
export GOMP_SPINCOUNT ?= 1000

.PHONY: book test install lab bench results clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[course,test,book]"
	$(BIN)/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $(STAMP)

install: $(STAMP)

book: $(STAMP)
	rm -rf build/book
	$(BIN)/jupyter-book build chapters --config $(CURDIR)/book.yml --toc $(CURDIR)/toc.yml --path-output $(CURDIR)/build/book -W -n --keep-going
	$(BIN)/python tools/check_book.py build/book/_build/html
	@echo "The book: build/book/_build/html/index.html"

test: $(STAMP)
	$(BIN)/python tools/export_notebooks.py chapters build/notebooks
	$(BIN)/python -m pytest

# Open the chapters as notebooks: jupytext opens the .md files directly, and tools/lab/overrides.json
# (JupyterLab's defaultViewers, copied into the environment's settings, never into your own
# ~/.jupyter) makes a double-click open a chapter as a notebook. Root (uid 0, common in containers)
# needs --allow-root. LAB_DIR and LAB_ARGS let tests/test_browser.py start this very target on a
# temporary copy of the chapters.
LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings
LAB_DIR ?= chapters
LAB_ARGS ?=
lab: $(STAMP)
	mkdir -p $(LAB_SETTINGS) && cp tools/lab/overrides.json $(LAB_SETTINGS)/overrides.json
	$(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS) $(LAB_DIR)

# Speed figures (machine-dependent, so never in the tests).
bench: $(STAMP)
	$(BIN)/python tools/benchmark.py

# Re-run the parts' side-by-side comparisons (5 seeds each, a few minutes; `where` and `local_where`, about half an hour each),
# Part IV's and Part V's cost sweeps (a few minutes), Part VII's ResNet-20 (3 seeds, about an hour) and the guide's
# measurements of every module in ResNet-50 (about five minutes), and store their results in attncourse/results/, which
# the chapters load.
# A maintainer's command: it rewrites tracked files, so neither `book` nor `test` calls it.
results: $(STAMP)
	$(BIN)/python -m attncourse.experiments channel --seeds 0 1 2 3 4 --keep-models
	$(BIN)/python -m attncourse.experiments hybrid --seeds 0 1 2 3 4 --keep-models
	$(BIN)/python -m attncourse.experiments hybrid2 --seeds 0 1 2 3 4 --keep-models
	$(BIN)/python -m attncourse.experiments selfattn --seeds 0 1 2 3 4 --keep-models
	$(BIN)/python -m attncourse.experiments selfattn_far --seeds 0 1 2 3 4
	$(BIN)/python -m attncourse.experiments where --seeds 0 1 2 3 4 --keep-models
	$(BIN)/python -m attncourse.experiments linear --seeds 0 1 2 3 4 --keep-models
	$(BIN)/python -m attncourse.linear.sweep
	$(BIN)/python -m attncourse.experiments local --seeds 0 1 2 3 4 --keep-models
	$(BIN)/python -m attncourse.experiments local_where --seeds 0 1 2 3 4 --keep-models
	$(BIN)/python -m attncourse.local.sweep
	$(BIN)/python -m attncourse.experiments blocks --seeds 0 1 2 3 4 --keep-models
	$(BIN)/python -m attncourse.experiments blocks_where --seeds 0 1 2 3 4 --keep-models
	$(BIN)/python -m attncourse.experiments blocks_phase --seeds 0 1 2 3 4
	$(BIN)/python -m attncourse.experiments networks --seeds 0 1 2 --keep-models
	$(BIN)/python -m attncourse.guide --store

clean:
	rm -rf build
