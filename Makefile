# The few commands a person types. `make serve` and `make test` install what they need first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PAIR ?= en-de
PORT ?= 8000
DATA_DIR ?=
DATA_FLAG := $(if $(DATA_DIR),--data-dir $(DATA_DIR),)

.PHONY: install serve test lint format train-sentiment export-sentiment train-translation train-baseline \
        export-translation bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip >/dev/null
	$(BIN)/pip install -e '.[train,dev]'

install: $(BIN)/python  ## create .venv and install the project with its extras

serve: $(BIN)/python  ## serve the shipped models on port $(PORT)
	$(BIN)/python -m service --port $(PORT)

test: $(BIN)/python  ## the whole suite (unit + integration, real server over HTTP)
	$(BIN)/python -m pytest -q

lint: $(BIN)/python
	$(BIN)/ruff check service training tests
	$(BIN)/ruff format --check service training tests

format: $(BIN)/python
	$(BIN)/ruff format service training tests
	$(BIN)/ruff check --fix service training tests

train-sentiment: $(BIN)/python  ## train the IMDB model from scratch and export it to models/sentiment
	$(BIN)/python -m training.sentiment.train --out runs/sentiment $(DATA_FLAG)
	$(BIN)/python -m training.export sentiment --run runs/sentiment --out models/sentiment --quantize $(DATA_FLAG)

train-translation: $(BIN)/python  ## train PAIR=en-de|en-fr (hours; resumes) and export to models/translate-PAIR
	$(BIN)/python -m training.translation.train --pair $(PAIR) --out runs/translate-$(PAIR) $(DATA_FLAG)
	$(BIN)/python -m training.export translation --run runs/translate-$(PAIR) --out models/translate-$(PAIR) \
	  $(if $(wildcard runs/baseline-$(PAIR)/best.pt),--baseline-run runs/baseline-$(PAIR),) $(DATA_FLAG)

train-baseline: $(BIN)/python  ## the same-size model without attention (report only, not shipped)
	$(BIN)/python -m training.translation.train --pair $(PAIR) --no-attention --out runs/baseline-$(PAIR) $(DATA_FLAG)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
