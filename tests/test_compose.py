"""docker-compose.yml, the container entrypoint and the Grafana dashboard, checked without a Docker engine.

docker-compose 1.29.2 (build/compose-venv, `make compose-tools`) validates and renders the compose file; the
entrypoint the containers run is started here against the embedded tritonserver 2.51, the same release as the image.
"""

import json
import os
import re
import subprocess
import urllib.error
import urllib.request

import pytest
import yaml

from harness.triton_stats import metrics_text
from server import ROOT
from server.backends import TRITON, environment, prepare_backends
from server.flags import Ports
from server.launch import free_ports, wait_ready
from server.processes import stop

pytestmark = pytest.mark.unit

COMPOSE = ROOT / "build" / "compose-venv" / "bin" / "docker-compose"
KEY = "compose-test-key-0123456789"
SECRETS = {"TRITON_ADMIN_KEY": KEY, "GRAFANA_ADMIN_PASSWORD": "compose-test-password"}


def compose(*args: str, **env: str) -> subprocess.CompletedProcess:
    assert COMPOSE.exists(), f"{COMPOSE} missing: run `make compose-tools`"
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS and k != "REPOSITORY_MODE"}
    return subprocess.run(
        [str(COMPOSE), "--project-directory", str(ROOT), "-f", str(ROOT / "docker-compose.yml"), *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def rendered() -> dict:
    done = compose("config", **SECRETS)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def test_compose_file_is_valid_and_needs_the_secrets():
    assert compose("config", "-q", **SECRETS).returncode == 0
    missing = compose("config", "-q", GRAFANA_ADMIN_PASSWORD="x")
    assert missing.returncode != 0 and "set TRITON_ADMIN_KEY" in missing.stderr


def test_triton_services(rendered):
    services = rendered["services"]
    for name, repository in (("triton-gpu", "build/gpu_repository"), ("triton-cpu", "model_repository")):
        triton = services[name]
        assert triton["image"].startswith("feedback-triton") and triton["build"]["dockerfile"] == "infra/Dockerfile"
        assert triton["environment"]["TRITON_ADMIN_KEY"] == KEY
        assert triton["volumes"] == [f"{ROOT / repository}:/srv/feedback/model_repository:ro"]
        assert triton["healthcheck"]["test"][:4] == ["CMD", "python3", "-m", "server.probe"]
        assert triton["ipc"] == "host" and triton["read_only"] is True
        assert "triton" in triton["networks"]["default"]["aliases"]
        assert [str(port).split(":")[0] for port in triton["ports"]] == ["127.0.0.1"] * 3  # unless TRITON_PUBLISH
    devices = services["triton-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "deploy" not in services["triton-cpu"]
    assert services["triton-gpu"]["profiles"] == ["gpu"] and services["triton-cpu"]["profiles"] == ["cpu"]


def test_writable_variant_is_one_variable(rendered):
    done = compose("config", REPOSITORY_MODE="rw", **SECRETS)
    volumes = yaml.safe_load(done.stdout)["services"]["triton-cpu"]["volumes"]
    assert volumes == [f"{ROOT / 'model_repository'}:/srv/feedback/model_repository:rw"]


def test_every_mounted_path_exists(rendered):
    """Bind mounts point at files in this checkout (the GPU repository is written by `make gpu-overlay`)."""
    for name, service in rendered["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if "gpu_repository" not in source:
                assert os.path.exists(source), f"{name}: {source} does not exist"
    assert (ROOT / "client" / "__main__.py").exists()  # the client service runs `python3 -m client`
    assert (ROOT / "python_backend" / "models").is_dir()  # COPY'd into the image; model.py links point there


def test_dockerfile_builds_from_the_pinned_triton_image():
    dockerfile = (ROOT / "infra" / "Dockerfile").read_text()
    assert re.search(r"^FROM nvcr\.io/nvidia/tritonserver:24\.10-py3$", dockerfile, re.M)  # tritonserver 2.51
    pins = dict(line.split("==") for line in (ROOT / "requirements.txt").read_text().split() if "==" in line)
    for package in ("numpy", "tokenizers"):  # the same versions the embedded server's Python steps run with
        assert f"{package}=={pins[package]}" in dockerfile
    assert re.search(r"^USER triton-server$", dockerfile, re.M)
    # .dockerignore keeps the context small (no .venv, no build/) but must let every COPY source through.
    allowed = {line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines() if line[:1] == "!"}
    assert set(re.findall(r"^COPY (\S+) ", dockerfile, re.M)) == allowed


def entrypoint(ports: Ports, key: str, repository) -> subprocess.Popen:
    """infra/triton-entrypoint.sh, with the embedded build's paths and free ports appended."""
    env = environment()
    env.update(
        PATH=f"{TRITON / 'bin'}:{env['PATH']}",
        TRITON_ADMIN_KEY=key,
        MODEL_REPOSITORY=str(repository),
        MODEL_CONTROL_MODE="none",
    )
    return subprocess.Popen(
        [
            str(ROOT / "infra" / "triton-entrypoint.sh"),
            f"--backend-directory={prepare_backends(ROOT / 'build')}",
            f"--cache-directory={TRITON / 'caches'}",
            *(f"--{protocol}-address=127.0.0.1" for protocol in ("http", "grpc", "metrics")),
            f"--http-port={ports.http}",
            f"--grpc-port={ports.grpc}",
            f"--metrics-port={ports.metrics}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def test_entrypoint_refuses_a_missing_or_weak_key(tmp_path):
    for key in ("", "short", "has:colon-and-enough-length"):
        process = entrypoint(Ports(*free_ports(3)), key, tmp_path)
        assert process.wait(30) == 2
        assert b"TRITON_ADMIN_KEY must" in process.stderr.read()
        process.stderr.close()


def test_entrypoint_flags_start_tritonserver_with_the_admin_endpoints_restricted(tmp_path):
    """An empty repository keeps this quick: what is checked is that tritonserver 2.51 takes the flags."""
    ports = Ports(*free_ports(3))
    process = entrypoint(ports, KEY, tmp_path)
    try:
        wait_ready(process, ports)
        index = f"http://127.0.0.1:{ports.http}/v2/repository/index"
        with pytest.raises(urllib.error.HTTPError, match="403"):
            urllib.request.urlopen(urllib.request.Request(index, method="POST"), timeout=10)
        request = urllib.request.Request(index, method="POST", headers={"triton-admin-key": KEY})
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert json.load(answer) == []
    finally:
        stop(process)
        process.stderr.close()


def test_dashboard_queries_metrics_triton_exports(server):
    """Every metric the dashboard plots is on the real server's /metrics, except the GPU ones (no GPU here)."""
    dashboard = json.loads((ROOT / "infra" / "grafana" / "dashboards" / "triton.json").read_text())
    used = {m for panel in dashboard["panels"] for t in panel["targets"] for m in re.findall(r"nv_\w+", t["expr"])}
    exported = set(re.findall(r"^# TYPE (nv_\w+)", metrics_text(server.ports.metrics), re.M))
    gpu_only = {m for m in used if m.startswith("nv_gpu_")}
    assert gpu_only == {"nv_gpu_utilization", "nv_gpu_memory_used_bytes"}
    assert used - gpu_only <= exported, used - gpu_only - exported
