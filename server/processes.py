"""A tritonserver's processes and shared-memory regions: stopping it, killing what is left of it, and removing the
stub regions it leaves in /dev/shm (docs/pitfalls.md says when it does)."""

import ctypes
import os
import re
import signal
import subprocess
from pathlib import Path

from server.flags import region_prefix

SHM = Path("/dev/shm")
# The Python backend's stubs name their regions so (server/flags.py adds each server's own token).
STUB_REGION = re.compile(r"triton_\w+_backend_shm_region_")


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


def stub_models(pid: int) -> dict[int, str]:
    """A tritonserver's running Python-backend stubs: pid -> the model each serves (a stub's first argument is
    <repository>/<model>/<version>/model.py)."""
    stubs = {}
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return stubs
    for child in children:
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:  # exited since the list was read
            continue
        if len(argv) > 2 and STUB_REGION.match(argv[2].decode(errors="replace")):
            stubs[int(child)] = Path(argv[1].decode(errors="replace")).parents[1].name
    return stubs


def zombie(pid: int) -> bool:
    """Dead and not yet reaped: a stub tritonserver stops is reaped at once (it waits for it), a killed one is not."""
    fields = _stat(pid)
    return bool(fields) and fields[0] == "Z"


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


def regions_named(prefix: str | None) -> set[Path]:
    """The /dev/shm files whose names start with a server's region prefix (flags.region_prefix): its stubs' regions,
    whether or not any process still maps them."""
    return set(SHM.glob(f"{prefix}*")) if prefix else set()


def remove_regions(prefix: str | None) -> set[Path]:
    """Remove a server's stub regions (once its process group is dead: no stub uses them any more); returns them."""
    regions = regions_named(prefix)
    for region in regions:
        region.unlink(missing_ok=True)
    return regions


def kill_group(pgid: int) -> None:
    """SIGKILL whatever is left of a tritonserver's process group, dead leader included.

    Stubs outlive a server that crashed or was killed: their health thread then waits forever on a lock in the
    shared memory the server held (tritonserver 2.51; seen here as stubs asleep on a futex, minutes after). The
    group id stays reserved while any member lives, so this never reaches another process.
    """
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop(process: subprocess.Popen, timeout: float = 30) -> set[Path]:
    """SIGTERM lets Triton unload models and remove its shared-memory regions; SIGKILL only if it hangs, and always
    for stubs left behind.

    Returns the stub regions it left behind, now removed: a killed server leaves them all, and tritonserver 2.51
    sometimes crashes (SIGSEGV) when stopped moments after clients vanished with requests in flight.
    """
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    kill_group(process.pid)
    process.wait()
    return remove_regions(region_prefix(process.args))


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def stop_with_parent() -> None:
    """preexec_fn of tritonserver: the kernel sends it SIGTERM when the process that started it dies, however that
    process died (SIGKILL after a container's grace period included), so a server never outlives its launcher.
    SIGTERM, not SIGKILL: tritonserver then unloads its models, which stops their stubs and removes their regions,
    within --exit-timeout-secs."""
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
