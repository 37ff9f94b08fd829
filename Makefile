# kd-bench: `make test` runs the tests, `make smoke` trains on the embedded synthetic data.
# The first target that needs Python creates .venv and installs the package (torch pinned in constraints.txt).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BUDGET ?= paper
DATA   ?= auto
KD     := $(PY) -m kd_methods.cli
EXECUTOR ?= sequential
ARGS   := --budget $(BUDGET) --data $(DATA)

.PHONY: all install test test-fast smoke reproduce-feed reproduce-dml reproduce-fitnets reproduce-fsp \
        reproduce-tsd reproduce-claims reproduce-all report bench ddp-smoke clean-runs plan-feed plan-dml \
        plan-fitnets plan-fsp plan-tsd plan-claims

all: install

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

TEST_WORKERS ?= 2   # pytest-xdist processes (one per core; a test module stays on one worker)

test: install
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

test-fast: install
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not slow"

smoke: install
	$(KD) run configs/scratch_resnet20_synthetic.yaml --budget paper --data synthetic

reproduce-feed reproduce-dml reproduce-fitnets reproduce-fsp reproduce-tsd reproduce-claims: install
	$(KD) reproduce $(@:reproduce-%=%) $(ARGS) --executor $(EXECUTOR)

# What a reproduction costs (every run, its status, FLOPs, time here and on a GPU); writes nothing.
plan-feed plan-dml plan-fitnets plan-fsp plan-tsd plan-claims: install
	$(KD) plan $(@:plan-%=%) $(ARGS)

reproduce-all: reproduce-feed reproduce-dml reproduce-fitnets reproduce-fsp reproduce-tsd

report: install
	$(KD) report

bench: install
	$(KD) bench

ddp-smoke: install
	$(PY) -m kd_methods.ddp_check

clean-runs:
	rm -rf runs
