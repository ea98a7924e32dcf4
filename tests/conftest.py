"""A real tritonserver for the whole session, on free ports, stopped by its PID even when tests fail."""

import socket
from dataclasses import dataclass
from pathlib import Path

import pytest

from python_backend.inprocess import InProcessEnsemble
from server.launch import ROOT, Ports, start, stop, wait_ready

REPOSITORY = ROOT / "model_repository"
POLL_SECS = 1  # short, so that a spurious reload would show up within the session


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def triton_shm_regions() -> set[str]:
    return {p.name for p in Path("/dev/shm").glob("triton_*")}


@dataclass(frozen=True)
class Server:
    ports: Ports
    log: Path

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.ports.grpc}"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.ports.http}"


def run_server(repository: Path, log: Path):
    """Start, wait for readiness, yield; on the way out stop it and check that it removed its shm regions."""
    before = triton_shm_regions()
    ports = Ports(*free_ports(3))
    process = start(repository, ports, log=log, poll_secs=POLL_SECS)
    try:
        wait_ready(process, ports)
        yield Server(ports, log)
    finally:
        stop(process)
        left = triton_shm_regions() - before
        for name in left:
            Path("/dev/shm", name).unlink(missing_ok=True)
        assert not left, f"tritonserver left shared-memory regions behind: {sorted(left)} (log: {log})"


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    yield from run_server(REPOSITORY, tmp_path_factory.mktemp("triton") / "server.log")


@pytest.fixture(scope="session")
def reference() -> InProcessEnsemble:
    return InProcessEnsemble(REPOSITORY)
