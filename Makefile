# The two quickstart commands:  make quickstart   and   make test
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/shakespeare
DATA ?= data/shakespeare
CONFIG ?= configs/shakespeare.py
PROMPT ?= ROMEO.
SAMPLE_TOKENS ?= 48
TRAIN_ARGS ?=

.PHONY: quickstart test env env-test

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed

env: $(VENV)/.installed
env-test: $(VENV)/.installed-test

# Prepare Shakespeare, train the default small model, report val loss, print a sample.
quickstart: env
	$(PY) -m gpt2jax.prepare --source=shakespeare --split=tail --out_dir=$(DATA)
	$(PY) -m gpt2jax.train --config=$(CONFIG) --workdir=$(WORKDIR) --config.data.dir=$(DATA) $(TRAIN_ARGS)
	$(PY) -m gpt2jax.sample --workdir=$(WORKDIR) --prompt="$(PROMPT)" --max_new_tokens=$(SAMPLE_TOKENS)

test: env-test
	$(PY) -m pytest -q -n 2 --dist loadfile
