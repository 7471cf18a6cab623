# The two commands a new user types: `make sweep` and `make test`.
# Both create .venv when missing, install torch==2.13.0 only when no torch is importable
# (a bare `torch` requirement would pull a multi-GB CUDA build; an existing torch, e.g. on a
# GPU image, is never replaced), install the project editable with every extra, then run.
# A user of the estimators alone needs none of the extras: `pip install psann-sweeps`.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Every extra of pyproject.toml (tests/test_dependencies.py checks that none is left out).
EXTRAS := sweeps,cluster,dev

.PHONY: sweep test test-fast test-slow setup clean bench

sweep: $(STAMP)
	$(PY) sweeps/hisso_wave.py

test: $(STAMP)
	$(PY) -m pytest -m "not slow and not gpu" $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -m "slow" $(PYTEST_ARGS)

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv --system-site-packages $(VENV)
	@if $(PY) -c "import torch" >/dev/null 2>&1; then \
		echo "torch already importable: $$($(PY) -c 'import torch; print(torch.__version__)') (kept)"; \
	else \
		echo "no torch found: installing torch==2.13.0"; \
		$(PY) -m pip install -q torch==2.13.0; \
	fi
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	@touch $(STAMP)

clean:
	rm -rf $(VENV) build *.egg-info
