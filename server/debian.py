"""Debian packages that the project's own files install when a tool is missing: as root with apt, otherwise the exact
apt command is printed. Used for the native backends' build tools and for the operations tools (infra/tools.py)."""

import logging
import os
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def ensure(packages: dict[str, str], purpose: str) -> None:
    """packages maps a file each package installs to the package; installs the packages whose file is missing."""
    missing = sorted({package for path, package in packages.items() if not Path(path).exists()})
    if not missing:
        return
    command = f"apt-get update && apt-get install -y --no-install-recommends {' '.join(missing)}"
    if os.geteuid() != 0:
        sys.exit(f"{purpose} needs Debian packages; run as root:\n  {command}")
    log.info("%s: installing %s", purpose, command)
    environment = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(command, shell=True, check=True, stdout=subprocess.DEVNULL, env=environment)
