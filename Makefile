# Set-up and checks. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.deps-installed

.PHONY: demo test check install system-deps bench fuzz docs lint typecheck clean

# The virtualenv with every dependency; rebuilt when the metadata changes.
$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q '.[test,dev]'
	touch $@

# A regular (non-editable) install, so the twisted/plugins dropins are real files
# in site-packages, exactly as users get them.
install: $(STAMP)
	$(BIN)/pip install -q --no-deps --no-build-isolation --force-reinstall .

# Debian packages the tests need (FreeTDS's tsql, iproute2, systemd-analyze for the
# units in contrib/systemd, etcd), installed when missing.
system-deps:
	@missing=""; \
	command -v tsql >/dev/null || missing="$$missing freetds-bin"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	command -v etcd >/dev/null || missing="$$missing etcd-server"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  else \
	    echo "make test needs:$$missing; install them with: sudo apt-get install$$missing" >&2; \
	    exit 1; \
	  fi; \
	fi

demo: install
	$(BIN)/python examples/demo.py

test: install system-deps
	$(BIN)/pytest -q
	$(MAKE) --no-print-directory lint typecheck docs

lint: $(STAMP)
	$(BIN)/ruff check srp tests bench fuzz twisted examples docs/conf.py

typecheck: $(STAMP)
	$(BIN)/mypy

docs: install
	$(BIN)/sphinx-build -q -W --keep-going -b html docs docs/_build/html

bench: install
	$(BIN)/python -m bench.run

# Every fuzz target for FUZZ_SECONDS each (docs/security.md records a run).
FUZZ_SECONDS ?= 60
fuzz: install
	for target in $$($(BIN)/python -m fuzz.targets --list | sed 's/^targets: //; s/,//g'); do \
	  $(BIN)/python -m fuzz.targets $$target -max_total_time=$(FUZZ_SECONDS) \
	    -artifact_prefix=fuzz/ -print_final_stats=1 > fuzz/$$target.log 2>&1 \
	    || { tail -40 fuzz/$$target.log; exit 1; }; \
	  grep -E "^Done" fuzz/$$target.log | sed "s/^/$$target: /"; \
	done

clean:
	rm -rf $(VENV) build *.egg-info docs/_build
