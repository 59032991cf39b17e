# Two entry points for a fresh machine: `make demo` (the main job on the embedded model)
# and `make test` (the test suite). Each creates .venv and installs what it needs once.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[local,topics,faiss,dev,train,ray]'
	touch $@

.PHONY: install demo test lint bench
install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/fingen demo

test: $(VENV)/.installed
	bash tests/setup_browser.sh
	$(PY) -m pytest -q -p no:cacheprovider

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check fingen tests bench && $(VENV)/bin/ruff format --check fingen tests bench

bench: $(VENV)/.installed
	$(PY) bench/llm_overhead.py
	$(PY) bench/mining.py
