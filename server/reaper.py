"""`python -m server.reaper TRITONSERVER_PID SUPERVISOR_PID`: the supervisor starts one beside each tritonserver it
runs, in a session of its own.

If the supervisor dies without stopping tritonserver (SIGKILL after a container's grace period, an OOM kill), the
kernel sends tritonserver SIGTERM (PR_SET_PDEATHSIG) and it stops within its exit timeout, but a stub it was talking
to when it exited waits for good on a lock in its shared memory (docs/pitfalls.md), and nobody removes the stubs'
regions. This process outlives the supervisor for that: it gives tritonserver its exit timeout, then kills what is
left of its process group and removes the regions. A supervisor that stops normally kills it first.
"""

import os
import sys
import time
from pathlib import Path

from server.launch import EXIT_TIMEOUT_SECS, alive, kill_group, stub_regions


def main() -> None:
    # The supervisor's pid comes as an argument: one killed while this process was still starting would otherwise
    # look like its parent (getppid() then names whoever adopted this process) and be waited for forever.
    triton, supervisor = int(sys.argv[1]), int(sys.argv[2])
    regions: set[Path] = set()
    while os.getppid() == supervisor:  # reparented once the supervisor is gone, however it died
        regions |= stub_regions(triton)  # the server's stub regions, while it can still be asked
        time.sleep(1)
    deadline = time.monotonic() + EXIT_TIMEOUT_SECS + 1
    while alive(triton) and time.monotonic() < deadline:
        time.sleep(0.1)
    regions |= kill_group(triton)
    for region in regions:
        region.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
