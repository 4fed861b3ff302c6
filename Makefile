# plex: the common tasks. `make demo` and `make test` are the README's two commands.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
PLEX    := $(BIN)/plex
PYTEST_ARGS ?=

.PHONY: install lock setup setup-test demo test unit integration lint bench nightly clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python            ## install plex and its dev tools into .venv, as locked
	$(BIN)/pip install -q -r requirements-dev.lock
	$(BIN)/pip install -q --no-deps -e .

lock:                             ## re-resolve the dev/test environment into requirements-dev.lock
	rm -rf .venv-lock && $(PY) -m venv .venv-lock
	.venv-lock/bin/pip install -q -e '.[dev]'
	( echo "# The dev/test environment, pinned: make install installs exactly this. make lock"; \
	  echo "# re-resolves it from pyproject.toml (dependencies + the dev extra)."; \
	  .venv-lock/bin/pip freeze --exclude-editable ) > requirements-dev.lock
	rm -rf .venv-lock

setup:                            ## install/start Incus (btrfs pool, bridge) and a Docker engine (root)
	bin/setup-incus
	bin/setup-docker >/dev/null

# The tests keep every packet on this machine: a bridge without NAT, forwarding no DNS query,
# behind a forward guard (bin/setup-incus); their internet is a namespace they make themselves.
setup-test:
	PLEX_NETWORK_NAT=false bin/setup-incus
	bin/setup-docker >/dev/null

demo: install setup               ## bake and deploy the demo plex on local Incus
	$(PLEX) validate plexes/demo.yaml
	$(PLEX) show demo
	$(PLEX) identity demo
	$(PLEX) bake demo --type all
	$(PLEX) deploy demo --yes
	$(PLEX) status demo

DOCKER_HOST ?= unix:///run/plex-docker.sock
export DOCKER_HOST

test: install setup-test          ## every test: unit and real-Incus integration
	CI=$${CI:-true} $(BIN)/pytest $(PYTEST_ARGS)

unit: install                     ## pure tests only (no daemon needed)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

integration: install setup-test
	CI=$${CI:-true} $(BIN)/pytest tests/integration $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check plex tests bench
	$(BIN)/ruff format --check plex tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: install setup
	$(BIN)/python bench/bake.py
	$(BIN)/python bench/reset.py
	$(BIN)/python bench/cli.py

nightly: install setup
	$(PLEX) nightly verniplex

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
