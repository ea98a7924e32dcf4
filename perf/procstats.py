"""What a tritonserver holds: resident memory of it and its stubs, and the /dev/shm regions it maps."""

import os
from pathlib import Path

from server.processes import mapped_shm_regions

PAGE = os.sysconf("SC_PAGE_SIZE")


def tree(pid: int) -> list[int]:
    """pid and all its descendants (the Python-backend stubs are tritonserver's children)."""
    pids, i = [pid], 0
    while i < len(pids):
        try:
            children = Path(f"/proc/{pids[i]}/task/{pids[i]}/children").read_text().split()
        except OSError:
            children = []
        pids += [int(child) for child in children]
        i += 1
    return pids


def rss_bytes(pid: int) -> int:
    """Resident memory of the server and its stubs together."""
    total = 0
    for member in tree(pid):
        try:
            total += int(Path(f"/proc/{member}/statm").read_text().split()[1]) * PAGE
        except OSError:
            pass  # exited between listing and reading
    return total


def shm_bytes(pid: int) -> tuple[int, int]:
    """(count, total size) of the /dev/shm files the server maps: its stubs' regions and clients' registered ones."""
    sizes = [path.stat().st_size for path in mapped_shm_regions(pid) if path.exists()]
    return len(sizes), sum(sizes)
