"""The project's images built and the compose stack's debian profile up for real with podman (issue #17).

`make test-containers` (CI runs it after `make test`; plain `pytest` leaves these out with `-m "not containers"`):
infra/images.py builds the server image (infra/cpu.Dockerfile) and Debian's Prometheus on a local Debian 12 base,
podman-compose (build/podman-compose-venv) starts the server, the client and Prometheus, and each step is timed.
Podman 4.3 without systemd schedules no healthchecks: the tests run the image's own healthcheck with
`podman healthcheck run`, which is what the timer would run.
"""

import json
import os
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from infra import images, monitor
from infra.podman import environment, podman
from server import ROOT
from server.launch import free_ports
from server.processes import stub_regions

pytestmark = pytest.mark.containers

COMPOSE = ROOT / "build" / "podman-compose-venv" / "bin" / "podman-compose"
PROJECT = "feedback-containers-test"
TIMINGS: dict[str, float] = {}  # step -> seconds, printed and written to build/test-containers/timings.json


class Stack:
    def __init__(self):
        self.key = secrets.token_urlsafe(32)
        http, grpc, metrics, prometheus = free_ports(4)
        self.ports = {"http": http, "grpc": grpc, "metrics": metrics, "prometheus": prometheus}
        self.env = environment() | {
            "TRITON_ADMIN_KEY": self.key,
            "GRAFANA_ADMIN_PASSWORD": "unused-by-the-debian-profile",
            "TRITON_HTTP_PORT": str(http),
            "TRITON_GRPC_PORT": str(grpc),
            "TRITON_METRICS_PORT": str(metrics),
            "PROMETHEUS_PORT": str(prometheus),
        }

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        assert COMPOSE.exists(), f"{COMPOSE} missing: run `make container-tools`"
        command = [str(COMPOSE), "--profile", "debian", "-p", PROJECT, "-f", str(ROOT / "docker-compose.yml"), *args]
        return subprocess.run(command, env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)

    def container(self, service: str) -> str:
        listed = podman(
            "ps", "-a", "--format", "{{.Names}}",
            "--filter", f"label=io.podman.compose.project={PROJECT}",
            "--filter", f"label=com.docker.compose.service={service}",
        ).stdout.split()  # fmt: skip
        assert len(listed) == 1, f"{service}: containers {listed}"
        return listed[0]

    def healthcheck(self) -> subprocess.CompletedProcess:
        return podman("healthcheck", "run", self.container("triton-debian"), check=False, timeout=60)

    def tritonserver_pid(self) -> int:
        """On the host (rootful podman shares the PID view): `python -m server` is the container's first process,
        tritonserver its child."""
        launcher = podman("inspect", "--format", "{{.State.Pid}}", self.container("triton-debian")).stdout.strip()
        for child in Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split():
            try:
                name = Path(f"/proc/{child}/exe").resolve().name
            except FileNotFoundError:  # a short-lived child that exited after the list was read
                continue
            if name == "tritonserver":
                return int(child)
        raise AssertionError("no tritonserver under the container's launcher")

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"


def leftovers() -> list[str]:
    containers = podman("ps", "-a", "-q", "--filter", f"label=io.podman.compose.project={PROJECT}").stdout.split()
    volumes = podman("volume", "ls", "-q", "--filter", f"label=io.podman.compose.project={PROJECT}").stdout.split()
    return [f"container {c}" for c in containers] + [f"volume {v}" for v in volumes]


def timed(step: str, seconds: float) -> None:
    TIMINGS[step] = round(seconds, 1)
    print(f"\n{step}: {seconds:.1f} s", flush=True)


@pytest.fixture(scope="module")
def stack():
    start = time.monotonic()
    images.build_all()
    timed("images built (base, context, server, prometheus)", time.monotonic() - start)
    for name in (images.SERVER, images.PROMETHEUS):
        TIMINGS[f"{name} MB"] = round(images.size_mb(name), 0)
    running = Stack()
    running.compose("down", "-v")  # a stack an interrupted run left behind
    regions = set()
    start = time.monotonic()
    try:
        up = running.compose("up", "-d")
        assert up.returncode == 0, up.stdout + up.stderr
        timed("compose up -d", time.monotonic() - start)
        running.started = start
        yield running
        regions = stub_regions(running.tritonserver_pid())
    finally:
        start = time.monotonic()
        down = running.compose("down", "-v", "-t", "15")
        timed("compose down", time.monotonic() - start)
        out = ROOT / "build" / "test-containers"
        out.mkdir(parents=True, exist_ok=True)
        (out / "timings.json").write_text(json.dumps(TIMINGS, indent=2) + "\n")
        print(json.dumps(TIMINGS, indent=2))
    assert down.returncode == 0, down.stdout + down.stderr
    assert not leftovers(), leftovers()
    assert regions, "the running server mapped no stub regions in the host's /dev/shm"
    assert not [region for region in regions if region.exists()], "stub regions left in /dev/shm after down"


def wait_healthy(stack: Stack, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if stack.healthcheck().returncode == 0:
            return time.monotonic() - start
        time.sleep(2)
    logs = podman("logs", "--tail", "30", stack.container("triton-debian"), check=False)
    raise AssertionError(f"not healthy after {timeout} s:\n{logs.stdout}{logs.stderr}")


def test_server_turns_healthy_through_the_canary(stack):
    wait_healthy(stack, 300)
    timed("up to healthy (canary probe)", time.monotonic() - stack.started)
    health = podman("inspect", "--format", "{{.State.Health.Status}}", stack.container("triton-debian")).stdout
    assert health.strip() == "healthy"
    user = podman("exec", stack.container("triton-debian"), "id", "-u").stdout.strip()
    assert user != "0", "the server runs as root"
    write = podman("exec", stack.container("triton-debian"), "touch", "/srv/feedback/x", check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr


def test_client_classifies_over_grpc_with_system_shared_memory(stack):
    client = stack.container("client-debian")
    start = time.monotonic()
    code = podman("wait", client, timeout=300).stdout.strip()
    output = podman("logs", client).stdout
    timed("client classified (after healthy)", time.monotonic() - start)
    assert code == "0", output
    lines = [line for line in output.splitlines() if "invoice" in line or "support never" in line]
    assert len(lines) == 2, output


def test_prometheus_scrapes_the_server_and_answers_the_hpa_query(stack):
    url, start = stack.url("prometheus"), time.monotonic()
    name, expression = monitor.adapter_query("compose", ["triton"])
    series = []
    while not series and time.monotonic() - start < 120:
        time.sleep(2)
        try:
            series = monitor.query(url, expression)
        except OSError:
            continue
    timed(f"Prometheus answers {name}", time.monotonic() - start)
    assert [s["metric"]["pod"] for s in series] == ["triton"], series
    assert monitor.query(url, 'up{job="triton"} == 1')


def test_admin_endpoints_refuse_a_caller_without_the_key(stack):
    index = f"{stack.url('http')}/v2/repository/index"
    with pytest.raises(urllib.error.HTTPError, match="403"):
        urllib.request.urlopen(urllib.request.Request(index, method="POST"), timeout=10)
    request = urllib.request.Request(index, method="POST", headers={"triton-admin-key": stack.key})
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert {model["name"] for model in json.load(answer)} >= {"feedback", "fuse"}


def test_a_killed_stub_is_detected_by_the_healthcheck(stack):
    """kill -9 fuse's stub: the healthcheck fails at once; the supervisor then reloads fuse (the repository is
    read-only: unload and load through the repository API) and it turns healthy, in the same tritonserver."""
    server = stack.tritonserver_pid()
    stubs = [
        int(pid)
        for pid in Path(f"/proc/{server}/task/{server}/children").read_text().split()
        if b"fuse" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    assert stubs, "no stub of fuse under the container's tritonserver"
    os.kill(stubs[0], signal.SIGKILL)
    start = time.monotonic()
    detected = stack.healthcheck()
    timed("healthcheck after the kill", time.monotonic() - start)
    assert detected.returncode != 0, f"a dead stub passed the healthcheck: {detected.stdout}"
    timed("healthy again (supervisor reloaded fuse)", wait_healthy(stack, 120))
    assert stack.tritonserver_pid() == server, "the supervisor restarted tritonserver instead of reloading fuse"
