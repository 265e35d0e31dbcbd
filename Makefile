# Habits: `make setup`, `make pipeline DATA=...`, `make test`.
# Every target that needs the virtualenv builds it first (idempotent).
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?=
OUTPUT ?= runs/fer2013
PROFILE ?= full
RUNNER ?= local
MODEL ?= dcnn
PYTEST_ARGS ?=

# Python 3.10 is required by TFX 1.16: take python3.10 from PATH, else from pyenv.
PYTHON310 ?= $(shell for p in python3.10 $$HOME/.pyenv/versions/3.10*/bin/python3.10; do \
	"$$p" -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null && { echo "$$p"; break; }; done)

.PHONY: setup pipeline smoke test lock clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.py constraints.txt
	@test -n "$(PYTHON310)" || { echo "error: Python 3.10 not found (TFX 1.16 needs it)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON310) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt wheel
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	# Fairness Indicators' declared pins clash with tfx 1.16 on paper; it runs without them.
	$(BIN)/pip install -q --no-deps fairness-indicators==0.47.0
	touch $@

pipeline: setup
	@test -n "$(DATA)" || { echo "usage: make pipeline DATA=/path/to/fer2013 [OUTPUT=dir] [PROFILE=smoke|full]"; exit 2; }
	$(BIN)/fer-pipeline run --data "$(DATA)" --output "$(OUTPUT)" --profile $(PROFILE) \
		--runner $(RUNNER) --model $(MODEL) $(if $(CLASSES),--classes $(CLASSES))

smoke:
	$(MAKE) pipeline PROFILE=smoke OUTPUT=runs/smoke

test: setup
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)

lock: setup
	{ echo "# Full lock of the Python 3.10 environment (pip constraints). Regenerate with 'make lock'."; \
	  $(BIN)/pip freeze --exclude-editable; } > constraints.txt

clean:
	rm -rf $(VENV) *.egg-info runs
