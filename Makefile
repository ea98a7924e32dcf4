# `make serve`: install, export if needed, run Triton in the foreground. `make test`: install, export, pytest.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed-$(shell sha1sum requirements.txt | cut -c1-12)
ARTIFACTS := model_repository/transformer/1/model.onnx model_repository/textcnn/1/model.pt \
             model_repository/tokenizer/1/tokenizer.json model_repository/fuse/1/stacking.npz \
             model_repository/check_tokens/config.pbtxt

.PHONY: install export serve test lint clean deploy rollback

install: $(INSTALLED)

$(INSTALLED): requirements.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	rm -f $(VENV)/.installed-* && touch $@

# Re-export when the exporter or the code it shares with the server changes; otherwise keep what is there.
# deploy.py and validate.py are not the exporter: changing them must not re-export (replacing deployed versions).
NOT_EXPORTER := export/deploy.py export/validate.py
$(ARTIFACTS) &: $(INSTALLED) $(filter-out $(NOT_EXPORTER),$(wildcard export/*.py)) python_backend/text.py python_backend/fuse.py
	$(PY) -m export

export: $(ARTIFACTS)

serve: export
	$(PY) -m server

test: export
	$(PY) -m pytest

# `make deploy MODEL=transformer SOURCE=path/to/model_folder [TENANT=id] [SERVER=host:http_port]`: checked, atomic.
# `make rollback MODEL=transformer [VERSION=1] [SERVER=host:http_port]`. With SERVER: return once it serves.
deploy: install
	$(PY) -m export.deploy $(if $(SERVER),--server $(SERVER)) deploy $(MODEL) $(SOURCE) $(if $(TENANT),--tenant $(TENANT))

rollback: install
	$(PY) -m export.deploy $(if $(SERVER),--server $(SERVER)) rollback $(MODEL) $(VERSION)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf build model_repository.retired model_repository/transformer model_repository/textcnn \
	       model_repository/tokenizer/1/tokenizer.json model_repository/fuse/1/stacking.npz \
	       model_repository/check_tokens/config.pbtxt
