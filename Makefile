# `make serve`: install, export if needed, run Triton in the foreground. `make test`: install, export, pytest.
# `make bench [BENCH=quick|full] [PROFILE="small minilm"]`: perf/ against the in-process limit, v0 and v1.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed-$(shell sha1sum requirements.txt | cut -c1-12)
ARTIFACTS := model_repository/transformer/1/model.onnx model_repository/textcnn/1/model.pt \
             model_repository/tokenizer/1/tokenizer.json model_repository/fuse/1/stacking.npz \
             model_repository/check_tokens/config.pbtxt

BENCH ?= quick
PROFILE ?= small minilm

.PHONY: install export serve test lint bench clean

install: $(INSTALLED)

$(INSTALLED): requirements.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	rm -f $(VENV)/.installed-* && touch $@

# Re-export when the exporter or the code it shares with the server changes; otherwise keep what is there.
$(ARTIFACTS) &: $(INSTALLED) $(wildcard export/*.py) python_backend/text.py python_backend/fuse.py
	$(PY) -m export

export: $(ARTIFACTS)

serve: export
	$(PY) -m server

test: export
	$(PY) -m pytest

bench: export
	$(PY) -m perf --mode $(BENCH) $(foreach profile,$(PROFILE),--profile $(profile))

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf build model_repository/transformer model_repository/textcnn \
	       model_repository/tokenizer/1/tokenizer.json model_repository/fuse/1/stacking.npz \
	       model_repository/check_tokens/config.pbtxt
