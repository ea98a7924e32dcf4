"""Build Triton's own onnxruntime and pytorch backends for the wheel's tritonserver, once, into build/native/.

`python -m server.native_backends` (run by `make install`) builds libtriton_onnxruntime.so and libtriton_pytorch.so
from their r24.10 sources (the release of the tritonserver 2.51 that nvidia-pytriton ships) against the pinned
onnxruntime wheel's libonnxruntime.so and the pinned torch wheel's libtorch. The result lives in
build/native/<hash of the inputs>/, so a second run finds it and builds nothing, and a running server's libraries
are never rebuilt under it.

Sources come from the folder named by TRITON_SOURCE_DIR (the unmodified upstream tarballs listed in SOURCES, checked
against their sha256). Without that folder they are cloned from upstream with git at the pinned commits; git
checks each commit's content against its id. The sources build unpatched.
"""

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from pathlib import Path

import onnxruntime
import pytriton
import torch

from server import debian

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
NATIVE = ROOT / "build" / "native"
BUNDLED_LIBS = Path(pytriton.__file__).parents[1] / "nvidia_pytriton.libs"
TORCH_LIB = Path(torch.__file__).parent / "lib"
ONNXRUNTIME_CAPI = Path(onnxruntime.__file__).parent / "capi"
TORCH_LIBS = ("libtorch.so", "libtorch_cpu.so", "libc10.so", "libgomp.so.1", "libtorch_global_deps.so")

# folder name -> (tarball in TRITON_SOURCE_DIR, its sha256, upstream git URL, pinned commit)
SOURCES = {
    "onnxruntime_backend": (
        "triton-onnxruntime_backend-r24.10.tar.gz",
        "a27ce4b34a31c8dc86a306195030ce40a505e858c13a08ded10959d937be64a2",
        "https://github.com/triton-inference-server/onnxruntime_backend",
        "17e5cb23a6fbeb37282eb7079dd0b580cd79530d",
    ),
    "pytorch_backend": (
        "triton-pytorch_backend-r24.10.tar.gz",
        "3bbd9bd9d3254a9f2f1eb6cd9870890443d0541eea7974964efe6b6810895b53",
        "https://github.com/triton-inference-server/pytorch_backend",
        "e97a90061f7399b25368e2cb1f6d5c40f8cbae4e",
    ),
    "backend": (
        "triton-backend-r24.10.tar.gz",
        "151da6fa28fbece76c7357a72e089768d4322e2382cce8b6b578424a82b4987a",
        "https://github.com/triton-inference-server/backend",
        "ac03a5d97403dec841ad46d0439e93db12c9268f",
    ),
    "core": (
        "triton-core-r24.10.tar.gz",
        "a77d172b45f5582fa6a089c894d003cdcd6e81f57d941a196eb4ca93ff7d8a63",
        "https://github.com/triton-inference-server/core",
        "bfec7c61dc0939433f64f14e89b1973073eac8ba",
    ),
    "common": (
        "triton-common-r24.10.tar.gz",
        "f8d42fac07949257d938261d3330ced625b33829ac02bac37fa837a4c6f6c57c",
        "https://github.com/triton-inference-server/common",
        "578491fc3944f77d16a6a38e3d7691c485c47ba0",
    ),
}
# ONNX Runtime's C API headers. The wheel's library serves API versions up to its own (31 for 1.31), and the API table
# is append-only, so an older header works; a newer one would make the library return no API table.
ORT_HEADERS = (
    "onnxruntime-c-api-29.tar.gz",
    "1429f2be3023cc2eb98accb005eb746b5fb251fcef972034fcc768c3d1220dc4",
    "https://github.com/microsoft/onnxruntime",
    f"v{onnxruntime.__version__}",  # the installed version's own headers, under include/onnxruntime/core/session
)
DEBIAN_PACKAGES = {  # what the build needs -> the Debian package that brings it
    "/usr/bin/cmake": "cmake",
    "/usr/bin/g++": "g++",
    "/usr/bin/make": "make",
    "/usr/bin/patchelf": "patchelf",
    "/usr/include/rapidjson/document.h": "rapidjson-dev",
    # Triton's common repository always adds its tests, which would otherwise download googletest.
    "/usr/src/googletest/CMakeLists.txt": "googletest",
    # The pytorch backend's CMake wants this interpreter's headers: Debian's python3 (the CPU image) comes without.
    f"{sysconfig.get_paths()['include']}/Python.h": f"libpython{sys.version_info.major}.{sys.version_info.minor}-dev",
}
COMMON_FLAGS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DTRITON_ENABLE_GPU=OFF",
    "-DFETCHCONTENT_FULLY_DISCONNECTED=ON",
    "-DFETCHCONTENT_SOURCE_DIR_GOOGLETEST=/usr/src/googletest",
    *(f"-DTRITON_{repo}_REPO_TAG=r24.10" for repo in ("BACKEND", "CORE", "COMMON")),
]


def server_library() -> Path:
    """The wheel renamed libtritonserver.so to libtritonserver-<hash>.so; the backends must ask for that name."""
    (library,) = BUNDLED_LIBS.glob("libtritonserver-*.so")
    return library


def onnxruntime_library() -> Path:
    (library,) = ONNXRUNTIME_CAPI.glob("libonnxruntime.so.1.*")
    return library


def source_dir() -> Path | None:
    folder = os.environ.get("TRITON_SOURCE_DIR")
    return Path(folder).resolve() if folder and Path(folder).is_dir() else None


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def inputs_hash() -> str:
    """Everything the built libraries depend on: pinned sources, this recipe, the wheels they link against."""
    parts = [f"{name}={commit}" for name, (_, _, _, commit) in SOURCES.items()]
    parts += [ORT_HEADERS[1], sha256(Path(__file__)), server_library().name, onnxruntime_library().name]
    parts += [torch.__version__, sys.version]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def install_build_tools() -> None:
    debian.ensure(DEBIAN_PACKAGES, "building Triton's native backends")


def unpack_sources(target: Path) -> None:
    """Every repository as target/<name>/, from TRITON_SOURCE_DIR's checked tarballs or from upstream with git."""
    local = source_dir()
    for name, (tarball, digest, url, commit) in {**SOURCES, "onnxruntime-c-api": ORT_HEADERS}.items():
        if local:
            archive = local / tarball
            if sha256(archive) != digest:
                sys.exit(f"{archive}: sha256 is not the pinned {digest}")
            with tarfile.open(archive) as tar:
                # Extraction filters came in Python 3.11.4; Debian 12's 3.11.2 (the CPU image) has none. The archive's
                # digest was checked above, so there it is extracted as upstream made it.
                tar.extractall(target, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        else:
            logger.info("TRITON_SOURCE_DIR is not set: cloning %s at %s", url, commit)
            clone = target / name
            subprocess.run(["git", "init", "-q", str(clone)], check=True)
            subprocess.run(["git", "-C", str(clone), "fetch", "-q", "--depth=1", url, commit], check=True)
            subprocess.run(["git", "-C", str(clone), "checkout", "-q", "FETCH_HEAD"], check=True)
    if not local:  # the tarball's layout: include/ with the C API headers
        (target / "onnxruntime-c-api-29").mkdir()
        (target / "onnxruntime-c-api").joinpath("include/onnxruntime/core/session").rename(
            target / "onnxruntime-c-api-29" / "include"
        )


def cmake(source: Path, build: Path, target: str, flags: list[str], log) -> Path:
    run = {"check": True, "stdout": log, "stderr": subprocess.STDOUT}
    subprocess.run(["cmake", "-S", str(source), "-B", str(build), *COMMON_FLAGS, *flags], **run)
    subprocess.run(["cmake", "--build", str(build), "--target", target, f"-j{os.cpu_count() or 2}"], **run)
    (library,) = build.glob("libtriton_*.so")
    return library


def build_backends(sources: Path, work: Path, out: Path, log) -> None:
    repos = [
        f"-DFETCHCONTENT_SOURCE_DIR_REPO-{repo.upper()}={sources / repo}" for repo in ("common", "core", "backend")
    ]
    ort_libs = work / "onnxruntime-lib"  # the link step wants libonnxruntime.so; the wheel has only the versioned file
    ort_libs.mkdir()
    (ort_libs / "libonnxruntime.so").symlink_to(onnxruntime_library())
    onnxruntime_so = cmake(
        sources / "onnxruntime_backend",
        work / "onnxruntime",
        "triton-onnxruntime-backend",
        [
            *repos,
            "-DTRITON_ENABLE_ONNXRUNTIME_TENSORRT=OFF",
            "-DTRITON_ENABLE_ONNXRUNTIME_OPENVINO=OFF",
            f"-DTRITON_ONNXRUNTIME_INCLUDE_PATHS={sources / 'onnxruntime-c-api-29' / 'include'}",
            f"-DTRITON_ONNXRUNTIME_LIB_PATHS={ort_libs}",
        ],
        log,
    )
    torch_dir = TORCH_LIB.parent
    pytorch_so = cmake(
        sources / "pytorch_backend",
        work / "pytorch",
        "triton-pytorch-backend",
        [
            *repos,
            "-DTRITON_PYTORCH_ENABLE_TORCHVISION=OFF",
            "-DTRITON_PYTORCH_ENABLE_TORCHTRT=OFF",
            "-DTRITON_ENABLE_NVTX=OFF",
            f"-DTRITON_PYTORCH_INCLUDE_PATHS={torch_dir / 'include'};{torch_dir / 'include/torch/csrc/api/include'}",
            f"-DTRITON_PYTORCH_LIB_PATHS={TORCH_LIB}",
            "-DTRITON_MIN_CXX_STANDARD=20",  # the torch wheel's headers need C++20
            f"-DPython3_EXECUTABLE={sys.executable}",
            f"-DPython3_INCLUDE_DIR={sysconfig.get_paths()['include']}",  # CMake misses a pyenv interpreter's
        ],
        log,
    )
    for name, library in (("onnxruntime", onnxruntime_so), ("pytorch", pytorch_so)):
        (out / name).mkdir(parents=True)
        shutil.copy2(library, out / name / library.name)
        subprocess.run(
            [
                "patchelf",
                "--replace-needed",
                "libtritonserver.so",
                server_library().name,
                str(out / name / library.name),
            ],
            check=True,
        )


def build() -> Path:
    """build/native/<hash>/{onnxruntime,pytorch}/libtriton_*.so, built unless already there."""
    out = NATIVE / inputs_hash()
    if out.exists():
        return out
    install_build_tools()
    NATIVE.mkdir(parents=True, exist_ok=True)
    log_path = NATIVE / f"{out.name}.log"
    logger.info("building Triton's native onnxruntime and pytorch backends (about 2 minutes); log: %s", log_path)
    with tempfile.TemporaryDirectory(dir=NATIVE) as scratch, open(log_path, "w") as log:
        work, staged = Path(scratch), Path(scratch) / "out"
        unpack_sources(work / "src")
        try:
            build_backends(work / "src", work, staged, log)
        except subprocess.CalledProcessError as error:
            log.flush()
            tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-30:])
            sys.exit(f"{tail}\nnative backend build failed ({error}); full log: {log_path}")
        staged.rename(out)  # all or nothing: a half-built folder never looks built
    logger.info("built %s", out)
    return out


def link_runtime_libraries(backends: Path, native: Path) -> None:
    """backends/{onnxruntime,pytorch}: the built backend plus links to the wheels' libraries it loads from $ORIGIN."""
    libraries = {
        "onnxruntime": {"libonnxruntime.so.1": onnxruntime_library()},
        "pytorch": {name: TORCH_LIB / name for name in TORCH_LIBS},
    }
    for name, links in libraries.items():
        folder = backends / name
        folder.mkdir(parents=True, exist_ok=True)
        for library in (native / name).iterdir():
            links[library.name] = library
        for link, target in links.items():
            (folder / link).symlink_to(target)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    build()
