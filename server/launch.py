"""Start the real tritonserver binary that the nvidia-pytriton wheel ships, on model_repository/, CPU only.

That build lacks native onnxruntime and libtorch backends. Triton runs `<backend-dir>/<name>/model.py` when
`libtriton_<name>.so` is absent, so the backend directory prepared here holds the Python backend (with the stub for
this interpreter) and python_backend/backends/{onnxruntime,pytorch} linked in under their native names.
"""

import os
import py_compile
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytriton

ROOT = Path(__file__).resolve().parents[1]
TRITON = Path(pytriton.__file__).parent / "tritonserver"
BUNDLED_LIBS = Path(pytriton.__file__).parents[1] / "nvidia_pytriton.libs"
PYTHON_BACKENDS = ("onnxruntime", "pytorch")


@dataclass(frozen=True)
class Ports:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 right now (so that servers started side by side on one machine do not clash)."""
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
    With valid bytecode already there, it writes nothing.
    """
    for source in repository.glob("*/[0-9]*/model.py"):
        cache = source.parent / "__pycache__" / f"model.{sys.implementation.cache_tag}.pyc"
        py_compile.compile(str(source), cfile=str(cache), doraise=True)


def prepare(repository: Path, build: Path) -> Path:
    """Precompile the repository and return the backend directory."""
    precompile(repository)
    return prepare_backends(build)


def prepare_backends(build: Path) -> Path:
    """<build>/backends: python/ (backend + stub for this Python) and one folder per Python-based backend."""
    backends = build / "backends"
    python = backends / "python"
    stub = TRITON / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}"
    if not python.exists():
        shutil.copytree(TRITON / "backends" / "python", python, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(stub / "triton_python_backend_stub", python)
    for name in PYTHON_BACKENDS:
        link = backends / name / "model.py"
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(ROOT / "python_backend" / "backends" / name / "model.py")
    return backends


def environment() -> dict[str, str]:
    env = dict(os.environ)
    # The stub links the first libpython3.X it finds: make it the running interpreter's, not the system's.
    libs = [sysconfig.get_config_var("LIBDIR"), str(BUNDLED_LIBS), env.get("LD_LIBRARY_PATH", "")]
    env["LD_LIBRARY_PATH"] = ":".join(p for p in libs if p)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"  # the stub imports this venv's packages
    env["PYTHONPATH"] = str(ROOT)  # model.py files import python_backend.*
    return env


def command(repository: Path, backends: Path, ports: Ports, bind: str, poll_secs: int) -> list[str]:
    return [
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
        "--model-control-mode=poll",
        f"--repository-poll-secs={poll_secs}",
        "--log-info=true",
    ]


def start(
    repository: Path,
    ports: Ports,
    build: Path = ROOT / "build",
    bind: str = "127.0.0.1",
    poll_secs: int = 5,
    log: Path | None = None,
) -> subprocess.Popen:
    """Start tritonserver in the background (its own process group, so stopping it stops its stubs)."""
    backends = prepare(repository, build)
    out = open(log, "ab") if log else subprocess.DEVNULL
    return subprocess.Popen(
        command(repository, backends, ports, bind, poll_secs),
        env=environment(),
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_ready(process: subprocess.Popen, ports: Ports, host: str = "127.0.0.1", timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tritonserver exited with code {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"http://{host}:{ports.http}/v2/health/ready", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"tritonserver not ready after {timeout} s")


def stop(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM lets Triton unload models and remove its shared-memory regions; SIGKILL only if it hangs."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()
