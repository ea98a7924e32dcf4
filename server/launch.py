"""Start the real tritonserver binary that the nvidia-pytriton wheel ships, on a model repository, CPU only; wait
until it is ready; `serving` does both and stops it whatever happens (server/processes.py).

`python -m server` (server/__main__.py) runs one under the supervisor; tests, benchmarks and deploy's trial loads
start theirs here, on free ports.
"""

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from server import ROOT, probe
from server.backends import environment, prepare
from server.flags import Ports, command
from server.processes import stop


def ports_in_use(ports: Ports, bind: str) -> list[str]:
    """Which of the server's ports something else already listens on, e.g. ["gRPC 8001"]."""
    busy = []
    for name, port in (("HTTP", ports.http), ("gRPC", ports.grpc), ("metrics", ports.metrics)):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT is free; a listener is not
            try:
                s.bind((bind, port))
            except OSError:
                busy.append(f"{name} {port}")
    return busy


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now, for servers started beside others (tests, benchmarks, deploy's trial loads)."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start(
    repository: Path,
    ports: Ports,
    build: Path = ROOT / "build",
    bind: str = "127.0.0.1",
    poll_secs: int = 5,
    log: Path | None = None,
    model_control: str = "poll",
    admin_key: str | None = None,
) -> subprocess.Popen:
    """Start tritonserver in the background (its own process group, so stopping it stops its stubs)."""
    backends = prepare(repository, build)
    out = open(log, "ab") if log else subprocess.DEVNULL
    return subprocess.Popen(
        command(repository, backends, ports, bind, poll_secs, model_control=model_control, admin_key=admin_key),
        env=environment(),
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_http_ready(process: subprocess.Popen, url: str, what: str, timeout: float = 120) -> None:
    """Until `url`/v2/health/ready answers 200 (any server speaking Triton's HTTP protocol), or `process` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} before it was ready")
        if probe.server_ready(url, timeout=1):
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} not ready after {timeout} s")


def wait_ready(process: subprocess.Popen, ports: Ports, host: str = "127.0.0.1", timeout: float = 120) -> None:
    wait_http_ready(process, f"http://{host}:{ports.http}", "tritonserver", timeout)


@dataclass(frozen=True)
class Running:
    """A tritonserver that `serving` started, and where to reach it."""

    process: subprocess.Popen
    ports: Ports
    # The stub regions stop() found left behind and removed, filled in once `serving` has stopped it.
    regions_left: set[Path] = field(default_factory=set, kw_only=True)

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.ports.grpc}"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.ports.http}"


@contextmanager
def serving(repository: Path, *, ready_timeout: float = 120, **start_options) -> Iterator[Running]:
    """A tritonserver on free ports, ready; stopped on the way out whatever happens (its stub regions removed)."""
    ports = Ports(*free_ports(3))
    running = Running(start(repository, ports, **start_options), ports)
    try:
        wait_ready(running.process, ports, timeout=ready_timeout)
        yield running
    finally:
        running.regions_left.update(stop(running.process))
