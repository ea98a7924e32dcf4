"""Podman, the container engine `make test-containers` runs: Debian's podman 4.3 with Debian's runc, installed by
server/debian.py when missing, with the project's engine settings (infra/containers/containers.conf)."""

import os
import subprocess
from pathlib import Path

from server.debian import ensure

CONF = Path(__file__).resolve().parent / "containers" / "containers.conf"
PACKAGES = {
    "/usr/bin/podman": "podman",
    "/usr/sbin/runc": "runc",
    # Compose services find each other by name (`triton`) through CNI's dnsname plugin; podman 4.3 lacks it.
    "/usr/lib/cni/dnsname": "golang-github-containernetworking-plugin-dnsname",
}


def environment() -> dict[str, str]:
    """The environment podman (and podman-compose, which calls it) runs with: the project's engine settings."""
    return os.environ | {"CONTAINERS_CONF": str(CONF)}


def ensure_engine() -> None:
    ensure(PACKAGES, "running the project's containers with podman")


def podman(*args: str, check: bool = True, timeout: float | None = None, **kwargs) -> subprocess.CompletedProcess:
    """`podman ARGS` with the project's settings; output captured as text unless the caller says otherwise."""
    kwargs.setdefault("capture_output", True)
    return subprocess.run(["podman", *args], env=environment(), check=check, timeout=timeout, text=True, **kwargs)
