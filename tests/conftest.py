"""A real tritonserver for the whole session, on free ports, stopped by its PID even when tests fail."""

from dataclasses import dataclass
from pathlib import Path

import pytest

from python_backend.inprocess import InProcessEnsemble
from server.launch import ROOT, Ports, free_ports, start, stop, wait_ready

REPOSITORY = ROOT / "model_repository"
POLL_SECS = 1  # short, so that a spurious reload would show up within the session


def mapped_shm_regions(pid: int) -> set[Path]:
    """The /dev/shm files a process maps: tritonserver maps every stub region and every client-registered region.

    Checking these (not a /dev/shm listing) keeps the check to this server, even when other servers run beside it.
    """
    with open(f"/proc/{pid}/maps") as maps:
        return {Path(line.split(maxsplit=5)[5].strip()) for line in maps if " /dev/shm/" in line}


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
    """Start, wait for readiness, yield; on the way out stop it and check that its shm regions are gone."""
    ports = Ports(*free_ports(3))
    process = start(repository, ports, log=log, poll_secs=POLL_SECS)
    regions: set[Path] = set()
    try:
        wait_ready(process, ports)
        yield Server(ports, log)
    finally:
        if process.poll() is None:
            regions = mapped_shm_regions(process.pid)
        stop(process)
        left = {region for region in regions if region.exists()}
        for region in left:
            region.unlink()
        assert not left, f"shared-memory regions left behind: {sorted(map(str, left))} (log: {log})"


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    yield from run_server(REPOSITORY, tmp_path_factory.mktemp("triton") / "server.log")


@pytest.fixture(scope="session")
def reference() -> InProcessEnsemble:
    return InProcessEnsemble(REPOSITORY)
