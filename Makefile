# `make serve`: install, export if needed, run Triton in the foreground. `make test`: install, export, pytest.
# `make bench [BENCH=quick|full] [PROFILE="accurate fast"]`: text in against a text-in v0 and a mosec pipeline, the
# in-process limit, and token ids in against v0 and v1 (perf/).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed-$(shell cat requirements*.txt | sha1sum | cut -c1-12)
ARTIFACTS := model_repository/transformer/1/model.onnx model_repository/textcnn/1/model.pt \
             model_repository/tokenizer/1/tokenizer.json model_repository/fuse/1/stacking.npz \
             model_repository/fuse/config.pbtxt model_repository/held_out.csv \
             model_repository/canary.json

# Triton's native backends build from these unmodified upstream sources (server/native_backends.py); without the
# folder, the build clones the same pinned commits.
TRITON_SOURCE_DIR ?= $(wildcard $(CURDIR)/../shared/third_party)
export TRITON_SOURCE_DIR

BENCH ?= quick
PROFILE ?= accurate fast

.PHONY: FORCE install venv export serve test test-containers container-tools test-fast lint clean bench bench-client compose-tools scan-tools monitor gpu-overlay deploy \
        rollback soak bench-overload bench-swap bench-tenants reliability fuzz

# The native backends are cached in build/native/<hash of their inputs>: after the first build this is a quick check.
install: $(INSTALLED)
	$(PY) -m server.native_backends

venv: $(INSTALLED)  # the pinned wheels alone: infra/cpu.Dockerfile's layer before the native backends

$(INSTALLED): requirements.txt requirements-no-deps.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-no-deps.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation --editable .
	rm -f $(VENV)/.installed-* && touch $@

# Re-export when the exporter or the code it shares with the server changes, or an artifact is missing; otherwise
# keep what is there. The release gates (release/deploy.py, gates.py) are not the exporter: changing them must not
# re-export (replacing deployed versions). Export leaves unchanged models untouched, so only canary.json, always
# written, dates a run.
EXPORTED := model_repository/canary.json
$(EXPORTED): $(INSTALLED) $(wildcard export/*.py) release/staging.py release/parity.py release/canary.py python_backend/text.py \
             python_backend/fuse.py $(if $(filter-out $(wildcard $(ARTIFACTS)),$(ARTIFACTS)),FORCE)
	$(PY) -m export

export: $(EXPORTED)

FORCE:

serve: install export
	$(PY) -m server

test: install export compose-tools scan-tools
	$(PY) -m pytest -m "not containers"

# Issue #17: the images built and the compose stack's debian profile up for real with podman (tests/test_containers.py).
# Podman, runc and debootstrap come from server/debian.py (root); about 4 minutes cold here, under a minute warm.
test-containers: install export container-tools
	$(PY) -m pytest -s -m containers tests/test_containers.py

test-fast: install export compose-tools  # the unit tests alone (pytest -m unit): no server, about 20 s
	$(PY) -m pytest -m unit

bench: install export
	$(PY) -m perf --mode $(BENCH) $(foreach profile,$(PROFILE),--profile $(profile))

bench-client: export  # shared memory against plain gRPC through the client library
	$(PY) -m perf.client_shm --output perf/results/client_shm

bench-swap: export  # deploy and roll back a transformer version under steady gRPC load: failures, latency, delays
	$(PY) -m perf.model_swap --output perf/results/model_swap

bench-tenants: export  # tenant heads at scale (1,000 heads), then each path to a tenant's own members
	$(PY) -m perf.tenant_heads --output perf/results/tenant_heads
	$(PY) -m perf.tenant_routing --output perf/results/tenant_routing

# Reliability (issue #8), opt-in: long runs that `make test` keeps short.
SOAK_SECONDS ?= 600
soak: export  # steady perf_analyzer load (shm and plain); fails on RSS or /dev/shm growth or any failed request
	$(PY) -m perf.soak --seconds $(SOAK_SECONDS) --output perf/results/soak

bench-overload: export  # about 10x the sustainable rate on the bounded queues
	$(PY) -m perf.overload --output perf/results/overload

reliability: export  # kill -9 every model's stub under load (make test kills fuse's only), and the server
	mkdir -p perf/results/reliability
	$(PY) -c 'import pathlib, perf.runs as r; r.record_run(pathlib.Path("perf/results/reliability"), {"RELIABILITY_FULL": 1})'
	set -o pipefail; RELIABILITY_FULL=1 $(PY) -m pytest -s -p no:warnings tests/test_recovery.py \
	    | tee perf/results/reliability/output.txt

fuzz: export  # 3,000 malformed requests per protocol instead of make test's 300
	FUZZ_REQUESTS=6000 $(PY) -m pytest -s tests/test_fuzz_live.py tests/test_properties.py

# docker-compose 1.29.2 (PyPI) validates docker-compose.yml offline; its old pins get their own venv.
COMPOSE_VENV := build/compose-venv
COMPOSE_INSTALLED := $(COMPOSE_VENV)/.installed-$(shell cat infra/compose-*requirements.txt | sha1sum | cut -c1-12)

compose-tools: $(COMPOSE_INSTALLED)

$(COMPOSE_INSTALLED): infra/compose-requirements.txt infra/compose-build-requirements.txt
	test -d $(COMPOSE_VENV) || $(PYTHON) -m venv $(COMPOSE_VENV)
	$(COMPOSE_VENV)/bin/pip install --quiet --disable-pip-version-check -r infra/compose-build-requirements.txt
	$(COMPOSE_VENV)/bin/pip install --quiet --disable-pip-version-check --no-build-isolation \
	    $$(grep -i '^pyyaml==' infra/compose-requirements.txt)
	$(COMPOSE_VENV)/bin/pip install --quiet --disable-pip-version-check -r infra/compose-requirements.txt
	rm -f $(COMPOSE_VENV)/.installed-* && touch $@

# podman-compose (pinned), which runs the compose stack's debian profile; its own venv, as docker-compose's.
CONTAINER_VENV := build/podman-compose-venv
CONTAINER_INSTALLED := $(CONTAINER_VENV)/.installed-$(shell sha1sum infra/podman-compose-requirements.txt | cut -c1-12)

container-tools: $(CONTAINER_INSTALLED)

$(CONTAINER_INSTALLED): infra/podman-compose-requirements.txt
	test -d $(CONTAINER_VENV) || $(PYTHON) -m venv $(CONTAINER_VENV)
	$(CONTAINER_VENV)/bin/pip install --quiet --disable-pip-version-check -r infra/podman-compose-requirements.txt
	rm -f $(CONTAINER_VENV)/.installed-* && touch $@

# checkov (pinned), the infrastructure scanner tests/test_infra_scan.py runs; its many dependencies get their own venv.
SCAN_VENV := build/checkov-venv
SCAN_INSTALLED := $(SCAN_VENV)/.installed-$(shell sha1sum infra/checkov-requirements.txt | cut -c1-12)

scan-tools: $(SCAN_INSTALLED)

$(SCAN_INSTALLED): infra/checkov-requirements.txt
	test -d $(SCAN_VENV) || $(PYTHON) -m venv $(SCAN_VENV)
	$(SCAN_VENV)/bin/pip install --quiet --disable-pip-version-check -r infra/checkov-requirements.txt
	rm -f $(SCAN_VENV)/.installed-* && touch $@

# Debian's Prometheus (installed when missing) scraping `make serve`'s metrics port, in the foreground.
monitor: install
	$(PY) -m infra.monitor

# The GPU variant of the repository that docker-compose's gpu profile and infra/k8s/overlays/gpu serve.
gpu-overlay: export
	$(PY) -m infra.gpu_overlay model_repository build/gpu_repository

# `make deploy MODEL=transformer SOURCE=path/to/model_folder [TENANT=id] [SERVER=host:http_port]`: checked, atomic.
# `make rollback MODEL=transformer [VERSION=1] [SERVER=host:http_port]`. With SERVER: return once it serves.
deploy: install
	$(PY) -m release.deploy $(if $(SERVER),--server $(SERVER)) deploy $(MODEL) $(SOURCE) $(if $(TENANT),--tenant $(TENANT))

rollback: install
	$(PY) -m release.deploy $(if $(SERVER),--server $(SERVER)) rollback $(MODEL) $(VERSION)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf build model_repository.retired model_repository/transformer model_repository/textcnn \
	       model_repository/tokenizer/1/tokenizer.json model_repository/fuse/1/stacking.npz \
	       model_repository/fuse/config.pbtxt model_repository/held_out.csv model_repository/canary.json
