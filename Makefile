# deltalab: `make run` sets up .venv and runs the default micro study; `make test` runs the tests.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
VENV := .venv
BIN := $(VENV)/bin
# No model hub: the micro-world builds its own tokenizer, models and data.
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# pip on this machine warns about every absent local index folder: keep the log readable.
QUIET_PIP := sed -E '/^WARNING: Location .* is ignored/d'

.PHONY: run test setup clean

setup: $(VENV)/.installed

# torch first, pinned to the local CPU build; then everything else under constraints.txt (the lock).
$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip 2>&1 | $(QUIET_PIP)
	$(BIN)/pip install -q torch==2.13.0 2>&1 | $(QUIET_PIP)
	$(BIN)/pip install -q -c constraints.txt -e ".[test]" 2>&1 | $(QUIET_PIP)
	$(BIN)/python -c "import deltalab, torch; print(\"deltalab\", deltalab.__version__, \"torch\", torch.__version__)"
	touch $@

run: setup
	PATH=$(abspath $(BIN)):$$PATH dvc repro
	@echo
	@echo "Results:"
	@echo "  metrics/generators.json   measured capability of every generator (the ladder)"
	@echo "  metrics/prompts.json      prompt counts and the train/eval overlap check"
	@echo "  metrics/judge.json        judge usage; metrics/pairs/<ablation>.json  pair-set deltas"
	@echo "  data/traces/<gen>.parquet verified traces;  data/models/<name>/  micro models"
	@echo "  data/judgments/<gen>.parquet  five-dimension scores;  data/pairs/<ablation>.parquet  DPO pairs"
	@$(BIN)/deltalab summary

test: setup
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/pytest -q

clean:
	rm -rf .snakemake .pytest_cache
