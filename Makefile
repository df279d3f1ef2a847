# One way to set up, test and demo vafusion. The venv is created on first use;
# pins in constraints.txt are the set known to install and work together.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint format demo bench readme clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: set PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -c constraints.txt -e '.[dev]'
	touch $(STAMP)

test: lint
	$(BIN)/python -m pytest

# The formatter and the linter hold the style (pyproject.toml [tool.ruff]); `make format` applies them.
# mypy checks the package's types (pyproject.toml [tool.mypy]).
LINTED := vafusion tests benchmarks examples
lint: $(STAMP)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format $(LINTED)
	$(BIN)/ruff check --fix $(LINTED)

demo: $(STAMP)
	rm -rf demo-out
	$(BIN)/vafusion demo --out demo-out

# Every benchmarks/bench_*.py (benchmarks/_common.py is their shared helper, not a benchmark).
# A missed target prints pass=false but does not stop the others; a crash does.
bench: $(STAMP)
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache

# Rewrite the CLI reference section of README.md from the commands' --help.
readme: $(STAMP)
	$(BIN)/python -c "import re, pathlib; from vafusion.cli import reference_markdown as r; p = pathlib.Path('README.md'); s = p.read_text(); a, b = '<!-- cli-reference:start -->', '<!-- cli-reference:end -->'; p.write_text(s[: s.index(a) + len(a)] + '\n' + r() + s[s.index(b):])"
