"""A real tritonserver for the whole session, on free ports, stopped by its PID even when tests fail."""

import secrets
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from client.admin import admin_headers
from conventions import REPOSITORY
from harness.triton_stats import request_counts
from python_backend.inprocess import InProcessEnsemble
from server.launch import Running, serving
from server.processes import mapped_shm_regions

POLL_SECS = 1  # short, so that a spurious reload would show up within the session


@dataclass(frozen=True)
class Server(Running):
    """A test's tritonserver: where to reach it, its log, and the key of its admin endpoints."""

    log: Path
    admin_key: str
    # Each test that asked for it, with the requests that failed during it ("model/REASON": count).
    tests: list[tuple[str, dict[str, int] | str]] = field(default_factory=list, kw_only=True)

    @property
    def pid(self) -> int:
        return self.process.pid

    def admin_headers(self, protocol: str) -> dict[str, str]:
        """Model-repository control and shared-memory registration are restricted, as in `make serve`."""
        return admin_headers(protocol, self.admin_key)


@contextmanager
def run_server(repository: Path, log: Path, model_control: str = "poll"):
    """A server of the test's own (server.launch.serving), whose exit, an exception included, also checks that its
    shm regions are gone: the clients' ones it still mapped, and its stubs' ones that stop() had to remove.

    A request tritonserver still counts in flight when it gives up at its exit timeout (leaving the stubs' regions)
    is a leak, and fails too. The failure names the models the log says were in flight, Triton's failed requests by
    model and reason, and the tests that used the server with the failures each one added, where to start looking.
    """
    admin_key = secrets.token_urlsafe(32)
    regions: set[Path] = set()
    failures: dict[str, int] | str = {}
    running = server = None
    try:
        with serving(
            repository, log=log, poll_secs=POLL_SECS, model_control=model_control, admin_key=admin_key
        ) as running:
            server = Server(running.process, running.ports, log, admin_key, regions_left=running.regions_left)
            try:
                yield server
            finally:
                if running.process.poll() is None:
                    regions = mapped_shm_regions(running.process.pid)
                    failures = failed_requests(running.ports.metrics)
    finally:
        left = {region for region in regions if region.exists()}  # clients' regions the server still held
        for region in left:
            region.unlink()
        stubs_left = running.regions_left if running else set()
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        in_flight = [line.split('"')[1] for line in lines if "in-flight inferences" in line and "has" in line][-3:]
        tests = [(test, added) for test, added in (server.tests if server else []) if added]
        assert not (stubs_left and in_flight), (
            f"tritonserver counted requests of {in_flight} in flight at shutdown (stub regions removed: "
            f"{len(stubs_left)}); failed requests by model and reason: {failures}; "
            f"the tests that used this server and had failed requests, in order: {tests}"
        )
        left |= stubs_left
        shutdown = [line for line in lines if "Timeout" in line][-4:]
        assert not left, f"shared-memory regions left behind: {sorted(map(str, left))}; shutdown: {shutdown}"


def failed_requests(metrics_port: int) -> dict[str, int] | str:
    """Triton's failed requests, "model/REASON": count, where there were any (harness.triton_stats.request_counts)."""
    try:
        counts = request_counts(metrics_port, "failure", by=("model", "reason"))
        return {key: count for key, count in counts.items() if count}
    except OSError as error:
        return f"metrics unreadable: {error}"


def pytest_collection_modifyitems(items):
    """Unit tests first, then the server tests, the slow ones last, so that a broken unit shows in seconds. A test
    not marked unit starts servers: it is marked server (`pytest -m "not server"` is the unit tests)."""
    for item in items:
        if not item.get_closest_marker("unit"):
            item.add_marker(pytest.mark.server)
    items.sort(key=lambda item: 0 if item.get_closest_marker("unit") else 2 if item.get_closest_marker("slow") else 1)


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    with run_server(REPOSITORY, tmp_path_factory.mktemp("triton") / "server.log") as running:
        yield running


@pytest.fixture(autouse=True)
def _watch_session_server(request):
    """Each test that uses the session's server is recorded with the requests that failed during it (a leak at
    shutdown lists them, see run_server). A test whose requests were cancelled on that server fails at once: a
    cancellation that reaches an ensemble before its parallel members start makes tritonserver 2.51 count the request
    in flight for good, and one that races the answer can crash it (docs/pitfalls.md)."""
    if "server" not in request.fixturenames:
        yield
        return
    server = request.getfixturevalue("server")
    before = failed_requests(server.ports.metrics)
    yield
    after = failed_requests(server.ports.metrics)
    if isinstance(before, str) or isinstance(after, str):
        server.tests.append((request.node.nodeid, after if isinstance(after, str) else before))
        return
    added = {key: count - before.get(key, 0) for key, count in after.items() if count != before.get(key, 0)}
    server.tests.append((request.node.nodeid, added))
    assert not cancelled(added), f"this test cancelled requests in flight on the session's server: {cancelled(added)}"


def cancelled(failures: dict[str, int]) -> dict[str, int]:
    """The CANCELED part of failed_requests()' counts."""
    return {key: count for key, count in failures.items() if key.endswith("/CANCELED")}


@pytest.fixture(scope="session")
def reference() -> InProcessEnsemble:
    return InProcessEnsemble(REPOSITORY)


def repository_copy(target: Path) -> Path:
    """A copy of the repository (links resolved) that a test may change without touching the session's server."""
    shutil.copytree(REPOSITORY, target, symlinks=False, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def installed(tool):
    """A tool of infra/tools.py (kubectl, prometheus), installed when missing; a skip that says why where it cannot
    be (not root: the apt command to run). CI runs as root, so there it is never skipped."""
    try:
        return tool()
    except SystemExit as reason:
        pytest.skip(str(reason))
