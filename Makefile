# Two entry points for a fresh machine: `make demo` and `make test`. Both install first (idempotent, fast when done).
PY := .venv/bin/python

.PHONY: install demo test bench clean

install:
	@bash scripts/install.sh

demo: install
	$(PY) -m testbed run scenarios/churn.yaml

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) benchmarks/run_all.py

clean:
	-$(PY) -m testbed clean
