"""`python -m infra.images`: the project's images, built with podman from the local Debian 12 base.

feedback-triton-cpu (infra/cpu.Dockerfile, context build/container-context) and feedback-prometheus
(infra/prometheus/Dockerfile). Layers are cached by podman, so a second build takes seconds to minutes. Builds never
pull (--pull=never): the base comes from infra/base_image.py. They run on the host's network with the host's CA
bundle and pip configuration mounted read-only (the build containers reach the package registries as the host does;
local wheel folders the pip configuration names are mounted too); nothing of these lands in an image (volumes and
build arguments are not layers).
"""

import logging
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from infra import base_image, container_context
from infra.podman import podman

DEPLOY = Path(__file__).resolve().parent
SERVER = "localhost/feedback-triton-cpu:latest"
PROMETHEUS = "localhost/feedback-prometheus:latest"
SERVER_BUILD_STAGE = "localhost/feedback-triton-cpu-build:latest"  # infra/cpu.Dockerfile's stage `build`: the cache
HOST_CERTS = Path("/etc/ssl/certs")
CA_BUNDLE = "ca-certificates.crt"
USER_PIP = (Path.home() / ".config" / "pip" / "pip.conf", Path.home() / ".pip" / "pip.conf")


@dataclass(frozen=True)
class Image:
    name: str
    dockerfile: Path
    context: Path


def host_access() -> list[str]:
    """podman build flags giving a build container the host's CA bundle, pip configuration and the local package
    folders it names. The bundle goes to /run/host-certs, not /etc/ssl/certs: there it would be read-only when
    ca-certificates (which python3-venv pulls in) writes its own bundle, and that package's configuration fails."""
    flags = ["--volume", f"{HOST_CERTS}:/run/host-certs:ro", "--build-arg", f"PIP_CERT=/run/host-certs/{CA_BUNDLE}"]
    folders = []
    # The build runs as the container's root: the host user's own configuration becomes root's there.
    configs = [(Path("/etc/pip.conf"), "/etc/pip.conf"), *((user, "/root/.config/pip/pip.conf") for user in USER_PIP)]
    for host, inside in configs:
        if host.is_file():
            flags += ["--volume", f"{host}:{inside}:ro"]
            folders += [Path(f) for f in re.findall(r"(?:file://)?(/[^\s]+)", host.read_text())]
    # A file:// index's pages link to ../../files: the folder above `simple` goes along.
    folders = [folder.parent if folder.name == "simple" else folder for folder in folders if folder.is_dir()]
    for folder in dict.fromkeys(folders):
        flags += ["--volume", f"{folder}:{folder}:ro"]
    return flags


def build(image: Image, target: str | None = None) -> float:
    """Build one image (output streamed); its seconds. Docker's image format: OCI's has no HEALTHCHECK."""
    start = time.monotonic()
    podman(
        "build", "--pull=never", "--layers", "--format", "docker", "--network", "host", *host_access(),
        *(["--target", target] if target else []),
        "--file", str(image.dockerfile), "--tag", image.name, str(image.context),
        capture_output=False,
    )  # fmt: skip
    return time.monotonic() - start


def size_mb(name: str) -> float:
    return int(podman("image", "inspect", "--format", "{{.Size}}", name).stdout) / 1e6


def build_all() -> dict[str, float]:
    """Every image the stack's debian profile runs; seconds per step."""
    seconds = {}
    start = time.monotonic()
    base_image.ensure_base()
    seconds["base"] = time.monotonic() - start
    start = time.monotonic()
    context = container_context.assemble()
    seconds["context"] = time.monotonic() - start
    # The build stage (wheels, backends) is tagged too: untagged, it would be the dangling image pruned below, and
    # the next build would redo it.
    build(Image(SERVER_BUILD_STAGE, DEPLOY / "cpu.Dockerfile", context), target="build")
    seconds["server"] = build(Image(SERVER, DEPLOY / "cpu.Dockerfile", context))
    seconds["prometheus"] = build(Image(PROMETHEUS, DEPLOY / "prometheus" / "Dockerfile", DEPLOY / "prometheus"))
    podman("image", "prune", "--force")  # layers the rebuilt images no longer use (a few GB per wheel change)
    return seconds


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        timings = build_all()
    except subprocess.CalledProcessError as error:
        sys.exit(f"image build failed: {error}")
    for step, seconds in timings.items():
        print(f"{step}: {seconds:.0f} s")
    for name in (SERVER, PROMETHEUS):
        print(f"{name}: {size_mb(name):.0f} MB")
