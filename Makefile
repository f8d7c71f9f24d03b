# Do'BaaS. `make demo` and `make test` set up everything they need on a fresh Debian 12 (as root).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT := .ci/apt-install
# Debian packages: building the venv, and what the test suite runs against (util-linux: mount for the disk-full test)
BASE_PKGS := python3 python3-venv python3-dev gcc make util-linux
TEST_PKGS := $(BASE_PKGS) samba acl postgresql
BENCH_PKGS := $(BASE_PKGS) restic

.PHONY: install compile demo test lint bench clean

install: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	@$(APT) $(BASE_PKGS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	@$(BIN)/python -m pip install -q -e '.[test]' 2>&1 | grep -v "^WARNING: Location" || true
	@$(BIN)/python -c "import orchestrator.cli.main" && touch $@

# byte-compile once: start-up time matters for every scheduled run (PYTHONDONTWRITEBYTECODE may be set)
compile: install
	@$(BIN)/python -m compileall -q orchestrator plugins >/dev/null

demo: install compile
	$(BIN)/dobaas demo

lint: install
	$(BIN)/ruff check orchestrator plugins tests

test: install compile
	@$(APT) $(TEST_PKGS)
	$(BIN)/ruff check orchestrator plugins tests
	$(BIN)/python -m pytest -q

bench: install compile
	@$(APT) $(BENCH_PKGS)
	@# every benchmark runs; the target fails if any of them missed a target
	@$(BIN)/python tests/bench/bench_image.py; a=$$?; $(BIN)/python tests/bench/bench_files.py; b=$$?; exit $$((a | b))

clean:
	rm -rf $(VENV) .bench .pytest_cache .ruff_cache .hypothesis
