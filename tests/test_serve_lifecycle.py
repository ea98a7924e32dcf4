"""`make serve` (python -m server) starts and stops like a service: a signal at any moment stops everything within
10 s and leaves no process or /dev/shm region, and a second start on busy ports fails fast without touching the
first server. STOP_CYCLES=50 runs the long version (make stop-stress); make test runs one cycle per moment."""

import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from conventions import CANARY_FILE
from server import ROOT
from server.flags import Ports, region_prefix
from server.launch import free_ports
from server.processes import (
    alive,
    group_members,
    kill_group,
    orphaned_stub_regions,
    regions_named,
    stub_models,
    stub_regions,
)
from server.supervise import Supervisor
from tests.conftest import REPOSITORY, repository_copy
from tests.test_recovery import Supervised

pytestmark = pytest.mark.slow  # servers of their own, or long runs: after the other tests

STOP_WITHIN = 10  # seconds, from the signal to the supervisor's exit with tritonserver and its stubs gone
MOMENTS = ("starting", "idle", "under load", "after a heal")
CYCLES = int(os.environ.get("STOP_CYCLES", len(MOMENTS)))


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def load(url: str, until: threading.Event) -> None:
    """Requests until told to stop; errors are expected once the server stops."""
    ids = np.full((4, 16), 5, np.int64)
    with grpcclient.InferenceServerClient(url) as triton:
        while not until.is_set():
            inputs = [grpcclient.InferInput(n, [4, 16], "INT64") for n in ("INPUT_IDS", "ATTENTION_MASK")]
            for tensor in inputs:
                tensor.set_data_from_numpy(ids)
            try:
                triton.infer("feedback", inputs, client_timeout=5)
            except Exception:  # noqa: BLE001 - the server going away mid-request is what this provokes
                time.sleep(0.05)


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    return repository_copy(tmp_path_factory.mktemp("lifecycle") / "repository")


@pytest.mark.parametrize("cycle", range(CYCLES))
def test_a_signal_at_any_moment_stops_everything(repository, tmp_path, cycle):
    rng = random.Random(cycle)
    moment, signum = MOMENTS[cycle % len(MOMENTS)], rng.choice([signal.SIGTERM, signal.SIGINT])
    server = Supervised(repository, tmp_path / "server.log")
    stop_load = threading.Event()
    tritons, stubs, regions = set(), set(), set()

    def remember() -> None:  # everything the supervisor started so far, to check that it is all gone
        for triton in children(server.process.pid):
            tritons.add(triton)
            stubs.update(children(triton))
            regions.update(stub_regions(triton))

    try:
        if moment == "starting":
            deadline = time.monotonic() + rng.uniform(0.1, 3.0)
            while time.monotonic() < deadline:
                remember()
                time.sleep(0.05)
        else:
            server.wait(ready=True)
            remember()
            if moment == "under load":
                threading.Thread(target=load, args=(f"127.0.0.1:{server.ports.grpc}", stop_load), daemon=True).start()
                time.sleep(rng.uniform(0.5, 2.0))
            elif moment == "after a heal":
                os.kill(server.stub_pid("fuse"), signal.SIGKILL)
                time.sleep(rng.uniform(1.0, 3.0))  # the supervisor notices and asks for the reload meanwhile
            remember()
        signalled = time.monotonic()
        server.process.send_signal(signum)
        server.process.wait(STOP_WITHIN)
        took = time.monotonic() - signalled
    finally:
        stop_load.set()
        if server.process.poll() is None:
            server.process.kill()
            for pid in tritons:
                os.killpg(pid, signal.SIGKILL) if alive(pid) else None
    print(f"\n{signal.Signals(signum).name} while {moment}: stopped in {took:.1f} s")
    assert server.process.returncode == 0, f"exit code {server.process.returncode} (log: {server.log})"
    assert not [pid for pid in tritons | stubs if alive(pid)], f"processes left (log: {server.log})"
    assert not [region for region in regions if region.exists()], "stub regions left in /dev/shm"


@pytest.mark.parametrize("moment", ["idle", "under load", "after a heal"])
def test_a_killed_supervisor_leaves_no_server_behind(repository, tmp_path, moment):
    """SIGKILL, as a container runtime sends after its grace period, gives the supervisor no chance to stop
    anything: tritonserver gets SIGTERM from the kernel when its parent dies (PR_SET_PDEATHSIG) and stops itself
    within its exit timeout; under load, stubs it was answering would then live on, and the reaper kills them and
    removes the regions."""
    server = Supervised(repository, tmp_path / "server.log")
    triton, stubs, regions = 0, [], set()  # no /proc/0: nothing to clean up if the start failed
    try:
        server.wait(ready=True)
        triton = server.triton_pid()
        if moment == "after a heal":
            os.kill(server.stub_pid("fuse"), signal.SIGKILL)
            server.wait(ready=False)
            server.wait(ready=True)
            deadline = time.monotonic() + 30  # tritonserver keeps the dead stub's region: the supervisor removes it
            while any(region.exists() for region in orphaned_stub_regions(triton)):
                assert time.monotonic() < deadline, f"the dead stub's region is still there (log: {server.log})"
                time.sleep(0.2)
        if moment == "under load":
            until = threading.Event()
            clients = [threading.Thread(target=load, args=(f"127.0.0.1:{server.ports.grpc}", until)) for _ in range(4)]
            for client in clients:
                client.start()
            time.sleep(2)
        stubs, regions = children(triton), stub_regions(triton)
        reaper = [pid for pid in children(server.process.pid) if pid != triton]
        killed = time.monotonic()
        server.process.kill()
        server.process.wait()
        while time.monotonic() - killed < STOP_WITHIN and (
            [pid for pid in [triton, *stubs, *reaper] if alive(pid)] or [r for r in regions if r.exists()]
        ):
            time.sleep(0.1)
        took = time.monotonic() - killed
        left = [pid for pid in [triton, *stubs, *reaper] if alive(pid)]
    finally:
        if moment == "under load":
            until.set()
            for client in clients:
                client.join()
        server.process.kill()
        regions |= stub_regions(triton)  # (none once it has stopped) a failed test's server is cleaned up too
        for pid in [triton, *stubs, *children(triton)]:
            os.kill(pid, signal.SIGKILL) if alive(pid) else None
        leftover_regions = [region for region in regions if region.exists()]
        for region in leftover_regions:
            region.unlink()
    print(f"\nsupervisor killed while {moment}: tritonserver, stubs, reaper and regions gone {took:.1f} s later")
    assert not left, f"processes outlived their supervisor by {STOP_WITHIN} s (log: {server.log})"
    assert not leftover_regions, f"stub regions left in /dev/shm: {leftover_regions}"


def test_the_reaper_cleans_up_when_the_supervisor_and_its_server_are_killed_together(repository, tmp_path):
    """Both killed at once as the Python models load (an OOM kill of the container's main processes, say): the
    stubs then wait for good on the dead server (tests/test_client.py), and only the reaper is left to kill them and
    remove their regions. Killed the moment a second region appears: the server has made it but not yet started
    its stub, so no process but the dead server knows of it; the reaper finds it by the server's region prefix."""
    server = Supervised(repository, tmp_path / "server.log")
    triton, prefix, regions, deadline = 0, None, set(), time.monotonic() + 60
    try:
        while len(regions) < 2 and time.monotonic() < deadline:  # two stubs starting: the models are loading
            if not prefix:
                tritons = [pid for pid in children(server.process.pid) if b"tritonserver" in cmdline(pid)]
                triton = tritons[0] if tritons else 0
                prefix = region_prefix(cmdline(triton).decode().split("\0")) if triton else None
            regions = regions_named(prefix)
            time.sleep(0.005)
        assert len(regions) >= 2, f"no stubs started (log: {server.log})"
        server.process.kill()
        os.kill(triton, signal.SIGKILL)
        killed = time.monotonic()
        while time.monotonic() - killed < STOP_WITHIN and (group_members(triton) or regions_named(prefix)):
            time.sleep(0.1)
        left, left_regions = group_members(triton), regions_named(prefix)
    finally:
        server.process.kill()
        kill_group(triton) if triton else None
        for region in regions_named(prefix):
            region.unlink()
    assert not left, f"stubs outlived the supervisor and server by {STOP_WITHIN} s"
    assert not left_regions, f"stub regions left in /dev/shm: {left_regions}"


def test_the_reaper_exits_when_the_supervisor_dies_before_it_has_started():
    """The supervisor killed the moment it has started its server and reaper, before the reaper (a Python process)
    has even run: the reaper still cleans up and exits, instead of taking its new parent for the supervisor."""
    code = (
        "import logging, sys; from pathlib import Path; from server.flags import Ports;"
        "logging.basicConfig(level=logging.INFO, format='%(message)s', stream=sys.stdout);"
        "from server.supervise import Supervisor;"
        "sys.exit(Supervisor([sys.executable, '-c', 'import time; time.sleep(600)'], {}, Ports(1, 2, 3), Path('.'),"
        " interval=0.5, probe_timeout=0.2).run())"
    )
    supervisor = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert "tritonserver started" in supervisor.stdout.readline()  # the server and the reaper are started
    started = children(supervisor.pid)
    supervisor.kill()
    supervisor.wait()
    deadline = time.monotonic() + STOP_WITHIN
    while [pid for pid in started if alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [(pid, cmdline(pid)) for pid in started if alive(pid)]
    for pid, _ in left:
        os.kill(pid, signal.SIGKILL)
    assert len(started) == 2 and not left, f"of {started}, still running after {STOP_WITHIN} s: {left}"


def test_second_start_on_busy_ports_fails_fast_and_leaves_the_first_serving(server):
    key_file = ROOT / "build" / "admin-key"
    key_before = key_file.read_bytes() if key_file.exists() else None
    env = os.environ | {
        "HTTP_PORT": str(server.ports.http),
        "GRPC_PORT": str(server.ports.grpc),
        "METRICS_PORT": str(server.ports.metrics),
    }
    env.pop("TRITON_ADMIN_KEY", None)  # so that a start that went ahead would write a new key file
    second = subprocess.run(
        [sys.executable, "-m", "server"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )
    assert second.returncode != 0
    assert f"HTTP {server.ports.http}" in second.stderr and "already in use" in second.stderr, second.stderr
    assert (key_file.read_bytes() if key_file.exists() else None) == key_before, "the key file was rewritten"
    with grpcclient.InferenceServerClient(server.grpc_url) as triton:
        assert triton.is_model_ready("feedback")
        headers = server.admin_headers("grpc")
        assert triton.get_model_repository_index(headers=headers).models  # its key still opens the admin API


@pytest.mark.parametrize(
    "fake_server, when",
    [
        ("import time; time.sleep(600)", 0.0),  # still loading, signal at once
        ("import time; time.sleep(600)", 1.3),  # still loading, signal inside a watch
        ("import sys; sys.exit(1)", 0.5),  # never comes up: signal during the back-off
        ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)", 0.5),  # hangs
    ],
)
def test_supervisor_stops_on_a_signal_delivered_at_chosen_points(fake_server, when):
    """The supervisor's loop alone, driving a stand-in child process, with a burst of signals: the handler only
    sets a flag, so however many arrive and wherever the loop is, it stops, kills the child, and exits 0."""
    code = (
        "import logging, sys; from pathlib import Path; from server.flags import Ports;"
        "logging.basicConfig(level=logging.INFO, format='%(message)s', stream=sys.stdout);"
        "from server.supervise import Supervisor;"
        f"sys.exit(Supervisor([sys.executable, '-c', {fake_server!r}], {{}}, Ports(1, 2, 3), Path('.'),"
        " interval=0.5, probe_timeout=0.2, stop_timeout=1).run())"
    )
    supervisor = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert "tritonserver started" in supervisor.stdout.readline()  # its handlers are in place from here on
    time.sleep(when)
    child = children(supervisor.pid)
    for _ in range(20):
        supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(STOP_WITHIN) == 0, supervisor.stdout.read()
    assert not [pid for pid in child if alive(pid)]


def test_supervisor_gives_up_on_a_server_that_never_comes_up():
    supervisor = Supervisor(
        [sys.executable, "-c", "import sys; sys.exit(3)"],
        {},
        Ports(1, 2, 3),
        Path("."),
        interval=0.05,
        max_failed_starts=2,
    )
    assert supervisor.run() == 1


HANGING_SERVER = """
import http.server, subprocess, sys, time
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # /v2/health/ready: ready
        self.send_response(200)
        self.end_headers()
    def do_POST(self):  # every inference: never answered
        time.sleep(600)
# A stand-in stub, with a stub's arguments (its model.py, its region's name), never reaped once it dies.
stubs = [subprocess.Popen([sys.executable, path, "triton_python_backend_shm_region_standin"]) for path in sys.argv[2:]]
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def test_supervisor_restarts_a_server_that_is_alive_but_answers_nothing(caplog):
    ports = Ports(*free_ports(3))
    argv = [sys.executable, "-c", HANGING_SERVER, str(ports.http)]
    caplog.set_level(logging.INFO, logger="server.supervise")
    supervisor = Supervisor(argv, {}, ports, REPOSITORY, interval=0.1, probe_timeout=0.3, hung_probes=3)
    supervisor.start()
    first, watches = supervisor.process.pid, 0
    try:
        deadline = time.monotonic() + 60
        while supervisor.process.pid == first:
            assert time.monotonic() < deadline, caplog.text
            supervisor.watch_once()
            watches += 1
    finally:
        supervisor.process.kill()
        supervisor.reap()
    said = caplog.text
    assert "alive but not answering: every canary timed out 3 probes in a row" in said, said
    assert watches >= 4  # ready once, then three probes that timed out


def test_a_dead_stub_whose_model_does_not_come_back_restarts_the_server(tmp_path, caplog):
    """The stand-in server's stand-in stub is killed (an unreaped child with a stub's arguments) and its inferences
    never answer: the supervisor reloads the stub's model at once, does not take the timed-out canaries for a hung
    server while that reload is under way, and restarts the server once the model is not back in heal_timeout."""
    repository = tmp_path / "repository"
    (repository / "fuse" / "1").mkdir(parents=True)
    (repository / "fuse" / "1" / "model.py").write_text("import time\ntime.sleep(600)\n")
    shutil.copy(REPOSITORY / CANARY_FILE, repository / CANARY_FILE)
    ports = Ports(*free_ports(3))
    argv = [sys.executable, "-c", HANGING_SERVER, str(ports.http), str(repository / "fuse" / "1" / "model.py")]
    caplog.set_level(logging.INFO, logger="server.supervise")
    supervisor = Supervisor(argv, {}, ports, repository, interval=0.1, probe_timeout=0.3, heal_timeout=2, hung_probes=3)
    supervisor.start()
    first = supervisor.process.pid
    try:
        deadline = time.monotonic() + 60
        while not stub_models(first):  # started before the server listens: known from the watch that finds it ready
            assert time.monotonic() < deadline
            time.sleep(0.05)
        while not supervisor.ready:
            assert time.monotonic() < deadline, caplog.text
            supervisor.watch_once()
        (stub,) = supervisor.stubs
        os.kill(stub, signal.SIGKILL)
        while supervisor.process.pid == first:
            assert time.monotonic() < deadline, caplog.text
            supervisor.watch_once()
    finally:
        kill_group(supervisor.process.pid)  # the server and its stand-in stub
        supervisor.reap()
    said = caplog.text
    assert f"fuse: its stub (pid {stub}) died, reloading it" in said, said
    assert "fuse not back 2 s after its reload was asked for" in said, said
    assert "alive but not answering" not in said, said
