# The README's two set-up commands are `make demo` and `make test`; each creates/reuses .venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 YOLO_OFFLINE=1

.PHONY: venv demo test test-slow bench lint

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(OFFLINE) $(PY) examples/run_pretrain.py

test: venv
	$(OFFLINE) YOLO_CONFIG_DIR=$$(mktemp -d) $(PY) -m pytest -q

test-slow: venv
	$(OFFLINE) YOLO_CONFIG_DIR=$$(mktemp -d) $(PY) -m pytest -q -m slow

bench: venv
	$(OFFLINE) $(PY) scripts/benchmark.py --quick

lint: venv
	$(VENV)/bin/ruff check .
