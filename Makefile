# Entry points. `make run` and `make test` set everything up on first use.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
export KEDRO_DISABLE_TELEMETRY := 1
export SAGEMAKER_SUPPRESS_V2_WARNING := 1

.PHONY: setup run test test-deploy lint bench docs viz-build serve

setup:
	@bash scripts/setup.sh

run: setup
	$(BIN)/kedro run --pipeline=demo

test: setup
	$(BIN)/python -m pytest

# Every DAG step run the way SageMaker runs it, one fresh process per step, all data
# through a moto S3 bucket (tests/deploy/test_dag_on_s3.py).
test-deploy: setup
	TSA_DEPLOY_E2E=1 $(BIN)/python -m pytest tests/deploy/test_dag_on_s3.py

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

# The SageMaker inference contract on http://127.0.0.1:8080 for one bundle
# (docs/source/serving.md#local-endpoint): make serve MODEL=data/06_models/model.tar.gz
serve: setup
	@test -n "$(MODEL)" || { echo "make serve needs MODEL=<model.tar.gz or its folder>" >&2; exit 2; }
	$(BIN)/python -m tsa_kedro.serving.server --model "$(MODEL)"

bench: setup
	$(BIN)/python -m benchmarks

docs: setup
	$(BIN)/sphinx-build -W --keep-going -b html docs/source docs/build/html

# Static kedro-viz site in build/ (previews need `make run` first); serve it with
# `python -m http.server --directory build`.
viz-build: setup
	$(BIN)/kedro viz build --include-previews
