"""`python -m infra.container_context`: build/container-context, the build context of infra/cpu.Dockerfile.

What the image needs lies partly outside what git tracks: the exported repository (written by `make export`, ignored
by git) and the native backends' upstream tarballs in $TRITON_SOURCE_DIR (outside the checkout). So the context is
assembled: the files git knows (tracked, or new and not ignored), model_repository/ as export left it (without tenants'
models, bytecode or staging folders: deployment state, not the image's), and the tarballs under third_party/.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from server.native_backends import ORT_HEADERS, SOURCES, source_dir

ROOT = Path(__file__).resolve().parents[1]
CONTEXT = ROOT / "build" / "container-context"
REPOSITORY_SKIPPED = shutil.ignore_patterns("__pycache__", ".staging-*", "*__*", "tenants.json", "*.retired")


def git_files() -> list[str]:
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True,
        capture_output=True,
    ).stdout
    # .dockerignore is infra/Dockerfile's (NVIDIA's image, the checkout as context): it would filter this context.
    names = [name for name in listed.decode().split("\0") if name and name != ".dockerignore"]
    return [name for name in names if os.path.lexists(ROOT / name)]


def assemble(context: Path = CONTEXT) -> Path:
    sources = source_dir()
    if sources is None:
        sys.exit("TRITON_SOURCE_DIR must name the folder of the native backends' tarballs (the image builds offline)")
    if not (ROOT / "model_repository" / "canary.json").exists():
        sys.exit("model_repository is not exported: run `make export` first")
    staged = context.with_name(context.name + ".staging")
    shutil.rmtree(staged, ignore_errors=True)
    for name in git_files():
        target = staged / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target, follow_symlinks=False)
    shutil.rmtree(staged / "model_repository")
    shutil.copytree(ROOT / "model_repository", staged / "model_repository", symlinks=True, ignore=REPOSITORY_SKIPPED)
    (staged / "third_party").mkdir()
    for tarball, *_ in (*SOURCES.values(), ORT_HEADERS):
        shutil.copy2(sources / tarball, staged / "third_party" / tarball)
    shutil.rmtree(context, ignore_errors=True)
    staged.rename(context)
    return context


if __name__ == "__main__":
    print(assemble())
