"""`python -m server.reaper TRITONSERVER_PID SUPERVISOR_PID REGION_PREFIX`: the supervisor starts one beside each
tritonserver it runs, in a session of its own.

If the supervisor dies without stopping tritonserver (SIGKILL after a container's grace period, an OOM kill), the
kernel sends tritonserver SIGTERM (PR_SET_PDEATHSIG) and it stops within its exit timeout, but a stub it was talking
to when it exited waits for good on a lock in its shared memory (docs/pitfalls.md), and nobody removes the stubs'
regions. This process outlives the supervisor for that: it gives tritonserver its exit timeout, then kills what is
left of its process group and removes the regions named with the server's prefix (server/flags.py). A supervisor
that stops normally kills it first.
"""

import os
import sys
import time

from server.flags import EXIT_TIMEOUT_SECS
from server.processes import alive, kill_group, remove_regions


def main() -> None:
    # The supervisor's pid comes as an argument: one killed while this process was still starting would otherwise
    # look like its parent (getppid() then names whoever adopted this process) and be waited for forever.
    triton, supervisor, prefix = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    while os.getppid() == supervisor:  # reparented once the supervisor is gone, however it died
        time.sleep(1)
    deadline = time.monotonic() + EXIT_TIMEOUT_SECS + 1
    while alive(triton) and time.monotonic() < deadline:
        time.sleep(0.1)
    kill_group(triton)
    remove_regions(prefix)


if __name__ == "__main__":
    main()
