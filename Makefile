# The two commands a new user needs: `make serve` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PORT   ?= 3000
EXPORTS ?= exports

# Load-test defaults (loopback only).
HOST       ?= http://127.0.0.1:3000
GRPC_HOST  ?= 127.0.0.1:8500
USERS      ?= 64
SPAWN_RATE ?= 16
DURATION   ?= 60s
# 0: one Locust process; N: Locust's distributed mode, a master and N local workers.
WORKERS    ?= 0

export TF_CPP_MIN_LOG_LEVEL ?= 2
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install serve test train build loadtest bench bench-peers-smoke chaos soak replicas clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## Train quick models for whatever the BentoML store lacks, then serve on :$(PORT).
serve: $(STAMP)
	$(PY) -m training all --quick --if-missing --fallback-synthetic --out $(EXPORTS)
	$(VENV)/bin/bentoml serve --host 0.0.0.0 --port $(PORT)

## The whole suite (real TensorFlow, real `bentoml serve`, synthetic data).
test: $(STAMP)
	$(PY) -m pytest -q

## Full training of every model (real datasets; needs internet or --data-path).
train: $(STAMP)
	$(PY) -m training all --out $(EXPORTS)

build: $(STAMP)
	$(VENV)/bin/bentoml build

LOCUST_ARGS = --host $(HOST) --users $(USERS) --spawn-rate $(SPAWN_RATE) --run-time $(DURATION) \
	--grpc-host $(GRPC_HOST) --csv reports/locust --html reports/locust.html --exit-code-on-error 1

## Locust, headless, against a running server (CSV + HTML under reports/; non-zero exit on any failure).
## WORKERS=N: Locust's distributed mode (a master and N worker processes; README "Load tests").
loadtest: $(STAMP)
	mkdir -p reports
ifeq ($(WORKERS),0)
	$(VENV)/bin/locust -f loadtest/locustfile.py --headless $(LOCUST_ARGS)
else
	$(PY) -m loadtest.distributed --workers $(WORKERS) -- $(LOCUST_ARGS)
endif

## Service vs in-process ceiling vs naive server (reports/bench.json); e.g. BENCH_ARGS="--models imdb --quick".
bench: $(STAMP)
	$(PY) -m loadtest.bench $(BENCH_ARGS)

## The bench's peers (BentoML, LitServe, Ray Serve; venvs under .bench/, installed once, minutes):
## each serves imdb for a few seconds, must answer right and leave no process behind.
bench-peers-smoke: $(STAMP)
	$(PY) -m training imdb --quick --if-missing --fallback-synthetic --out $(EXPORTS)
	$(PY) -m loadtest.peers

## Reliability scenarios against a real 2-worker server (reports/chaos.json); e.g. CHAOS_ARGS="--scenarios kill".
chaos: $(STAMP)
	$(PY) -m loadtest.chaos $(CHAOS_ARGS)

## Mixed Locust traffic on both protocols for DURATION (e.g. make soak DURATION=30m): errors, RSS, p99 drift.
soak: $(STAMP)
	$(PY) -m loadtest.soak --duration $(DURATION) $(SOAK_ARGS)

## Replicas on loopback sharing one store: round-robin spread, kill -9 and a rolling update
## under load (reports/replicas.json); the store is $BENTOML_HOME (make serve trains it).
replicas: $(STAMP)
	$(PY) -m training all --quick --if-missing --fallback-synthetic --out $(EXPORTS)
	$(PY) -m loadtest.replicas $(REPLICAS_ARGS)

clean:
	rm -rf $(VENV) reports .pytest_cache
