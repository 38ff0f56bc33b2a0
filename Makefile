# Two commands for a newcomer:  `make run`  starts the service,  `make test`  runs the tests.
# Everything else (virtualenv, data, training, migrations, registration) happens on the way.

PYTHON ?= python3
PORT ?= 8000
VENV := .venv
BIN := $(VENV)/bin
MANAGE := cd backend/server && ../../$(BIN)/python manage.py
SHARED_DATA := ../shared/data
DATA_DIR := research/data
ARTIFACTS := research/artifacts/manifest.json

# The Makefile is the local, debug-friendly way in; production settings come from the environment.
export DEBUG ?= 1

.PHONY: run test test-fast install data train migrate register token manage clean

$(BIN)/.runtime: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

$(BIN)/.dev: $(BIN)/.runtime requirements-dev.txt
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

install: $(BIN)/.runtime

# Copy the Adult files from the shared folder when it exists; otherwise train.py downloads them.
data:
	@mkdir -p $(DATA_DIR)
	@for f in adult.data adult.test; do \
	  if [ ! -f $(DATA_DIR)/$$f ] && [ -f $(SHARED_DATA)/$$f ]; then \
	    cp $(SHARED_DATA)/$$f $(DATA_DIR)/$$f && echo "copied $$f from $(SHARED_DATA)"; fi; \
	done

# Trained again when the training or model code changes (an older manifest may list joblib
# artifacts only, from before ONNX serving).
$(ARTIFACTS): research/train.py research/adult.py $(wildcard backend/server/apps/ml/*.py \
		backend/server/apps/ml/income_classifier/*.py) | $(BIN)/.runtime data
	$(BIN)/python research/train.py

train: $(BIN)/.runtime data
	$(BIN)/python research/train.py

migrate: $(BIN)/.runtime
	$(MANAGE) migrate --noinput

register: migrate $(ARTIFACTS)
	$(MANAGE) register_models

run: register
	$(MANAGE) runserver 127.0.0.1:$(PORT)

test: $(BIN)/.dev $(ARTIFACTS)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The tests that start no server or script: about 20 seconds.
test-fast: $(BIN)/.dev $(ARTIFACTS)
	$(BIN)/python -m pytest -m "not live" $(PYTEST_ARGS)

# An API token for writes and feedback, its user created if needed (default: your login name):
#   export ML_API_TOKEN=$$(make -s token)      or      make -s token NAME=ann
NAME ?= $(or $(USER),ml-client)
token: $(BIN)/.runtime
	@$(MANAGE) migrate --noinput --verbosity 0
	@$(MANAGE) api_token "$(NAME)" --create-user

# Any manage.py command on the make-run database, with DEBUG=1 as make run has it:
#   make manage ARGS=createsuperuser      make manage ARGS="api_token ann --rotate"
manage: $(BIN)/.runtime
	$(MANAGE) $(ARGS)

clean:
	rm -rf $(VENV) research/artifacts backend/server/db.sqlite3* backend/server/staticfiles
