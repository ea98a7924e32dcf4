"""Start the real tritonserver binary that the nvidia-pytriton wheel ships, on model_repository/, CPU only.

That wheel lacks Triton's onnxruntime and pytorch backends; server/native_backends.py builds them from their r24.10
sources. The backend directory prepared here holds the Python backend (with the stub for this interpreter) and the
native onnxruntime/ and pytorch/ backends, as in NVIDIA's container.
"""

import ctypes
import os
import py_compile
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytriton

from client.admin import ADMIN_HEADER
from server import native_backends, probe

ROOT = Path(__file__).resolve().parents[1]
REPOSITORY = ROOT / "model_repository"  # the checkout's: what `make serve` serves and `make export` writes
TRITON = Path(pytriton.__file__).parent / "tritonserver"
BUNDLED_LIBS = native_backends.BUNDLED_LIBS
# The Python backend's stubs name their regions so.
STUB_REGION = re.compile(r"triton_\w+_backend_shm_region_")
# Endpoints that load code, map memory into the server or change what it writes: callers need the admin key.
# Inference, health, metadata, model config and statistics stay open.
ADMIN_APIS = ("model-repository", "shared-memory", "trace", "logging")
EXIT_TIMEOUT_SECS = 5  # unloading takes about 2 s here; well inside a 10 s grace period
ADMIN_KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,}")  # no ':', '=' or ',' (the flag's separators); not guessable


@dataclass(frozen=True)
class Ports:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002


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


def precompile(repository: Path) -> None:
    """Write each version folder's model.py bytecode before Triton starts.

    The stub runs an isolated interpreter (PYTHONPYCACHEPREFIX and PYTHONDONTWRITEBYTECODE are ignored), so on first
    import it writes __pycache__/ into the version folder, which poll mode sees as a change and reloads the model.
    With valid bytecode already there, it writes nothing. Nor does this when the bytecode is newer than its source:
    rewriting it would make a server already running on this repository reload the model.
    """
    for source in repository.glob("*/[0-9]*/model.py"):
        cache = source.parent / "__pycache__" / f"model.{sys.implementation.cache_tag}.pyc"
        if not cache.exists() or cache.stat().st_mtime < source.stat().st_mtime:
            py_compile.compile(str(source), cfile=str(cache), doraise=True)


def prepare(repository: Path, build: Path) -> Path:
    """Precompile the repository and return the backend directory."""
    precompile(repository)
    return prepare_backends(build)


def prepare_backends(build: Path) -> Path:
    """<build>/backends/<hash>: python/ (the wheel's backend + the stub for this Python), and Triton's native
    onnxruntime/ and pytorch/ (built once by server/native_backends.py). Made whole under a temporary name, then
    renamed, and never changed after: a later start cannot change what a running server has loaded."""
    native = native_backends.build()
    backends = build / "backends" / native.name
    if backends.exists():
        return backends
    backends.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=".staging-", dir=backends.parent))
    staged.chmod(0o755)  # mkdtemp makes it 0700: in the CPU image root builds it and an unprivileged user serves it
    stub = TRITON / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}"
    shutil.copytree(TRITON / "backends" / "python", staged / "python", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(stub / "triton_python_backend_stub", staged / "python")
    native_backends.link_runtime_libraries(staged, native)
    try:
        staged.rename(backends)
    except OSError:  # another start made it meanwhile: the same content
        shutil.rmtree(staged)
    return backends


def environment() -> dict[str, str]:
    env = dict(os.environ)
    # The stub links the first libpython3.X it finds: make it the running interpreter's, not the system's.
    libs = [sysconfig.get_config_var("LIBDIR"), str(BUNDLED_LIBS), env.get("LD_LIBRARY_PATH", "")]
    env["LD_LIBRARY_PATH"] = ":".join(p for p in libs if p)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"  # the stub imports this venv's packages
    env["PYTHONPATH"] = str(ROOT)  # model.py files import python_backend.*
    return env


def model_control_args(mode: str, poll_secs: int) -> list[str]:
    """poll: Triton rescans the repository every poll_secs and loads what changed, so dropping a version in is enough.
    explicit: everything is loaded at start, later only on the repository load API (release/deploy.py --server)."""
    if mode == "poll":
        return ["--model-control-mode=poll", f"--repository-poll-secs={poll_secs}"]
    if mode == "explicit":
        return ["--model-control-mode=explicit", "--load-model=*"]
    raise ValueError(f"model control mode must be 'poll' or 'explicit', got {mode!r}")


def restriction_flags(admin_key: str) -> list[str]:
    """tritonserver's own header check on the admin endpoints, for gRPC and HTTP alike."""
    if not ADMIN_KEY_PATTERN.fullmatch(admin_key):
        raise ValueError("the admin key must be at least 16 characters from A-Z, a-z, 0-9, '_' and '-'")
    apis = ",".join(ADMIN_APIS)
    return [
        f"--grpc-restricted-protocol={apis}:{ADMIN_HEADER}={admin_key}",
        f"--http-restricted-api={apis}:{ADMIN_HEADER}={admin_key}",
    ]


def command(
    repository: Path,
    backends: Path,
    ports: Ports,
    bind: str,
    poll_secs: int,
    *,
    model_control: str = "poll",
    admin_key: str | None = None,
) -> list[str]:
    """tritonserver's argv; with an admin key, the ADMIN_APIS answer only requests that carry it."""
    argv = [
        str(TRITON / "bin" / "tritonserver"),
        f"--model-repository={repository}",
        f"--backend-directory={backends}",
        f"--cache-directory={TRITON / 'caches'}",
        f"--http-address={bind}",
        f"--http-port={ports.http}",
        f"--grpc-address={bind}",
        f"--grpc-port={ports.grpc}",
        f"--metrics-address={bind}",
        f"--metrics-port={ports.metrics}",
        *model_control_args(model_control, poll_secs),
        # How long a stopping server waits for in-flight requests before it exits anyway (default 30 s): bounded
        # well inside a container's 10 s grace period, also when it stops on its own (its launcher died).
        f"--exit-timeout-secs={EXIT_TIMEOUT_SECS}",
        "--log-info=true",
    ]
    return argv + (restriction_flags(admin_key) if admin_key else [])


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


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def stop_with_parent() -> None:
    """preexec_fn of tritonserver: the kernel sends it SIGTERM when the process that started it dies, however that
    process died (SIGKILL after a container's grace period included), so a server never outlives its launcher.
    SIGTERM, not SIGKILL: tritonserver then unloads its models, which stops their stubs and removes their regions,
    within --exit-timeout-secs."""
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


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


def mapped_shm_regions(pid: int) -> set[Path]:
    """The /dev/shm files a process maps (none if it is gone): tritonserver maps every stub region and every
    client-registered region, so this names one server's regions even when other servers run beside it."""
    try:
        with open(f"/proc/{pid}/maps") as maps:
            return {Path(line.split(maxsplit=5)[5].strip()) for line in maps if " /dev/shm/" in line}
    except OSError:
        return set()


def stub_regions(pid: int) -> set[Path]:
    """The Python-backend regions a tritonserver maps (not the clients' registered ones, which belong to them)."""
    return {path for path in mapped_shm_regions(pid) if STUB_REGION.match(path.name)}


def orphaned_stub_regions(pid: int) -> set[Path]:
    """The stub regions a tritonserver maps that no running stub of it was started with (a stub's third argument
    names its region): a killed stub's region, which tritonserver 2.51 keeps mapped and never removes."""
    started_with = set()
    try:
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            started_with.update(arg.decode(errors="replace") for arg in argv[2:3])
    except OSError:
        return set()
    return {path for path in stub_regions(pid) if path.name not in started_with}


def _stat(pid: int | str) -> list[str]:
    """/proc/<pid>/stat's fields after "(comm)": state, ppid, pgrp, ... ([] for a process that is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def alive(pid: int) -> bool:
    """Running: a zombie is dead, only not yet reaped."""
    fields = _stat(pid)
    return bool(fields) and fields[0] != "Z"


def group_members(pgid: int) -> list[int]:
    """The processes of a process group that are still running."""
    members = []
    for entry in Path("/proc").iterdir():
        fields = _stat(entry.name) if entry.name.isdigit() else []
        if fields and int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def group_stub_regions(pgid: int) -> set[Path]:
    """The regions of the stubs still alive in a tritonserver's process group, from each stub's third argument:
    once the server is gone, they are the only record of them."""
    regions = set()
    for pid in group_members(pgid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        if len(argv) > 2 and STUB_REGION.match(name := argv[2].decode(errors="replace")):
            regions.add(Path("/dev/shm") / name)
    return regions


def kill_group(pgid: int) -> set[Path]:
    """SIGKILL whatever is left of a tritonserver's process group, dead leader included; returns the stubs' regions.

    Stubs outlive a server that crashed or was killed: their health thread then waits forever on a lock in the
    shared memory the server held (tritonserver 2.51; seen here as stubs asleep on a futex, minutes after). The
    group id stays reserved while any member lives, so this never reaches another process.
    """
    regions = group_stub_regions(pgid)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return regions


def stop(process: subprocess.Popen, timeout: float = 30) -> set[Path]:
    """SIGTERM lets Triton unload models and remove its shared-memory regions; SIGKILL only if it hangs, and always
    for stubs left behind.

    Returns the stub regions it left behind, now removed: a killed server leaves them all, and tritonserver 2.51
    sometimes crashes (SIGSEGV) when stopped moments after clients vanished with requests in flight.
    """
    regions = stub_regions(process.pid)
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    regions |= kill_group(process.pid)
    process.wait()
    left = {region for region in regions if region.exists()}
    for region in left:
        region.unlink(missing_ok=True)
    return left


@dataclass(frozen=True)
class Running:
    """A tritonserver that `serving` started, and where to reach it."""

    process: subprocess.Popen
    ports: Ports

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
    process = start(repository, ports, **start_options)
    try:
        wait_ready(process, ports, timeout=ready_timeout)
        yield Running(process, ports)
    finally:
        stop(process)
