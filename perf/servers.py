"""Start each system's server processes on free ports, measure their CPU time and memory, stop them by PID."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from server import ROOT
from server.launch import free_ports, serving, wait_http_ready
from server.processes import stop

# As such apps are deployed: gunicorn with one uvicorn worker process per core, each with every model in memory.
# (uvicorn's own `--workers 2` answered perf_analyzer in 44 ms at concurrency 1 instead of 1 ms, 22 requests/s; under
# gunicorn the same app and workers served 847/s at c=1 and 1,485/s at c=16.)
WORKERS = os.cpu_count() or 1
APP = "perf.apps:"


@dataclass
class Running:
    """A started system: where to reach it, and the process trees that are its server side."""

    http_url: str
    grpc_url: str | None
    processes: list[subprocess.Popen]

    def tree(self) -> list[psutil.Process]:
        found = []
        for process in self.processes:
            try:
                root = psutil.Process(process.pid)
                found += [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        return found

    def cpu_seconds(self) -> dict[str, float]:
        """User + system CPU time so far of each server process, by role (see `role`)."""
        spent: dict[str, float] = {}
        for process in self.tree():
            try:
                times = process.cpu_times()
                name = role(process)
            except psutil.NoSuchProcess:
                continue
            spent[name] = spent.get(name, 0.0) + times.user + times.system
        return spent

    def memory_mib(self) -> float:
        """Sum of PSS over the server processes: forked workers share pages, and PSS counts a shared page once."""
        total = 0
        for process in self.tree():
            try:
                total += process.memory_full_info().pss
            except psutil.NoSuchProcess:
                pass
        return total / 2**20


STUB_INSTANCE = re.compile(r"^(\w+)_\d+_\d+$")  # the stub's argument naming its model instance: `fuse_0_0`


def role(process: psutil.Process) -> str:
    """tritonserver, a Python-backend stub by model, or a web app by factory (and member): where CPU time goes."""
    argv = process.cmdline()
    if argv and argv[0].endswith("triton_python_backend_stub"):
        instance = next((STUB_INSTANCE.match(arg) for arg in argv if STUB_INSTANCE.match(arg)), None)
        return f"stub {instance.group(1) if instance else '?'}"
    app = next((arg for arg in argv if arg.startswith(APP)), None)
    if app:
        factory = app.removeprefix(APP).removesuffix("()")
        member = process.environ().get("BENCH_MEMBER")
        return f"{factory} {member}" if member else factory
    return Path(argv[0]).name if argv else process.name()


@contextmanager
def triton(repository: Path, log: Path):
    # Poll mode is for version drop-ins; a benchmark wants a repository that holds still.
    with serving(repository, ready_timeout=300, log=log, poll_secs=3600) as server:
        yield Running(server.http_url, server.grpc_url, [server.process])


def _gunicorn(factory: str, port: int, env: dict[str, str], log) -> subprocess.Popen:
    argv = [sys.executable, "-m", "gunicorn", "--worker-class", "uvicorn.workers.UvicornWorker", "--workers"]
    argv += [str(WORKERS), "--bind", f"127.0.0.1:{port}", "--log-level", "warning", f"{APP}{factory}()"]
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _app_env(repository: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), BENCH_REPOSITORY=str(repository), **extra)
    env["OMP_NUM_THREADS"] = "1"  # each app sets its own model threads; stop OpenMP from taking every core as well
    return env


@contextmanager
def _apps(started: list[tuple[subprocess.Popen, str, str]], log):
    """Wait for every (process, url, name), yield, and stop them all whatever happens."""
    try:
        for process, url, name in started:
            wait_http_ready(process, f"http://{url}", name, timeout=180)
        yield
    finally:
        for process, _, _ in started:
            stop(process)
        log.close()


@contextmanager
def v0_monolith(repository: Path, log: Path):
    (port,) = free_ports(1)
    out = open(log, "ab")
    process = _gunicorn("monolith", port, _app_env(repository), out)
    url = f"127.0.0.1:{port}"
    with _apps([(process, url, "v0 monolith")], out):
        yield Running(url, None, [process])


@contextmanager
def pipeline(repository: Path, log: Path):
    """perf/pipeline.py under mosec: its Rust front on a free port, a Python worker per core."""
    (port,) = free_ports(1)
    out = open(log, "ab")
    sockets = Path(tempfile.mkdtemp(prefix="mosec-"))  # its workers' IPC sockets, removed with it
    env = _app_env(repository, MOSEC_PORT=str(port), MOSEC_ADDRESS="127.0.0.1", MOSEC_PATH=str(sockets / "ipc"))
    process = subprocess.Popen(
        [sys.executable, "-m", "perf.pipeline"], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"127.0.0.1:{port}"
    try:
        wait_until_answers(process, f"http://{url}/", "mosec pipeline", timeout=180)
        yield Running(url, None, [process])
    finally:
        stop(process)
        out.close()
        shutil.rmtree(sockets, ignore_errors=True)


def wait_until_answers(process: subprocess.Popen, url: str, what: str, timeout: float) -> None:
    """Until GET `url` answers 200 (a server without Triton's health routes), or `process` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{what} not ready after {timeout} s")


@contextmanager
def v1_fanout(repository: Path, members: list[str], log: Path):
    ports = free_ports(len(members) + 1)
    out = open(log, "ab")
    started = []
    for name, port in zip(members, ports, strict=False):
        process = _gunicorn("member", port, _app_env(repository, BENCH_MEMBER=name), out)
        started.append((process, f"127.0.0.1:{port}", f"v1 member {name}"))
    member_urls = ",".join(f"{name}=http://{url}" for name, (_, url, _) in zip(members, started, strict=True))
    combiner = _gunicorn("combiner", ports[-1], _app_env(repository, BENCH_MEMBER_URLS=member_urls), out)
    started.append((combiner, f"127.0.0.1:{ports[-1]}", "v1 combiner"))
    with _apps(started, out):
        yield Running(started[-1][1], None, [process for process, _, _ in started])
