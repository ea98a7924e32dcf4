"""The backend directory and environment of the real tritonserver binary that the nvidia-pytriton wheel ships.

That wheel lacks Triton's onnxruntime and pytorch backends; server/native_backends.py builds them from their r24.10
sources. The backend directory prepared here holds the Python backend (with the stub for this interpreter) and the
native onnxruntime/ and pytorch/ backends, as in NVIDIA's container.
"""

import os
import py_compile
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytriton

from server import ROOT, native_backends

TRITON = Path(pytriton.__file__).parent / "tritonserver"
BUNDLED_LIBS = native_backends.BUNDLED_LIBS


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
