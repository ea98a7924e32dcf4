"""`python -m infra.base_image`: the Debian 12 base image the project's Dockerfiles start FROM, made locally.

Where no image registry is reachable (CI, this machine), debootstrap builds a minimal bookworm from the Debian mirror
that apt already uses, once: the root filesystem is cached as build/base/debian-bookworm.tar and imported under the
standard name, so `FROM docker.io/library/debian:bookworm` resolves locally (builds pass --pull=never). Where the
image is already there (pulled, or imported before), nothing is done.
"""

import logging
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from infra.podman import ensure_engine, podman
from server.debian import ensure

ROOT = Path(__file__).resolve().parents[1]
NAME = "docker.io/library/debian:bookworm"
CACHE = ROOT / "build" / "base" / "debian-bookworm.tar"
DEFAULT_MIRROR = "http://deb.debian.org/debian"


def mirror() -> str:
    """The first Debian (not security) mirror in this machine's apt sources, one-line or deb822 format."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for source in sources:
        text = source.read_text(errors="replace") if source.is_file() else ""
        for url in re.findall(r"^(?:deb\s+(?:\[[^]]*\]\s+)?|URIs:\s*)(\S+)", text, re.M):
            if "security" not in url:
                return url
    return DEFAULT_MIRROR


def bootstrap(cache: Path) -> None:
    """A minbase bookworm root filesystem, as a tar written whole under a temporary name and then renamed."""
    ensure({"/usr/sbin/debootstrap": "debootstrap"}, "making the Debian 12 base image")
    cache.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="debootstrap-", dir=cache.parent) as scratch:
        rootfs = Path(scratch) / "rootfs"
        subprocess.run(
            ["debootstrap", "--variant=minbase", "bookworm", str(rootfs), mirror()],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        shutil.rmtree(rootfs / "var" / "cache" / "apt" / "archives", ignore_errors=True)  # the .debs, not needed
        staged = Path(scratch) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(staged), "."], check=True)
        staged.rename(cache)


def ensure_base(name: str = NAME, cache: Path = CACHE) -> None:
    ensure_engine()
    if podman("image", "exists", name, check=False).returncode == 0:
        return
    start = time.monotonic()
    if not cache.exists():
        print(f"making {name} with debootstrap from {mirror()} (about 2 minutes), cached as {cache}", flush=True)
        bootstrap(cache)
    podman("import", "--change", 'CMD ["/bin/bash"]', str(cache), name)
    print(f"{name}: imported in {time.monotonic() - start:.0f} s", flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    ensure_base()
    sys.exit(0)
