"""`python -m server`: run tritonserver on model_repository/ under the supervisor (what `make serve` runs).

The supervisor (server/supervise.py) keeps it serving: it reloads a model whose Python stub died and restarts
tritonserver if it exits. SUPERVISE=0 runs tritonserver alone in the foreground instead.

Ports and bind address come from HTTP_PORT, GRPC_PORT, METRICS_PORT and BIND (default 127.0.0.1); MODEL_CONTROL
is `poll` (default, every POLL_SECS) or `explicit` (all models loaded at start, then only through the load API).
Model-repository control, shared-memory registration, trace and log settings need the admin key (header
`triton-admin-key`, on gRPC `triton-grpc-protocol-triton-admin-key`): TRITON_ADMIN_KEY, or else a random key made
for this start and written to build/admin-key (readable by this user only).

A start that cannot serve says so in one line and exits non-zero before it changes anything a running server uses
(the key file, the backend directory, the repository's bytecode): a port in use, a malformed key, a repository that
does not load (the supervisor gives up after its bounded retries).
"""

import logging
import signal
import sys


def stop_before_serving(signum: int, _frame) -> None:
    """SIGTERM/SIGINT before the supervisor takes over (imports, the backend build): nothing runs yet to stop."""
    print(f"stopped by {signal.Signals(signum).name} before tritonserver started", flush=True)
    sys.exit(0)


# First, before the slow imports below: a stop during start-up must be as clean as one while serving.
for _signal in (signal.SIGTERM, signal.SIGINT):
    signal.signal(_signal, stop_before_serving)

import os  # noqa: E402
import secrets  # noqa: E402
from pathlib import Path  # noqa: E402

from conventions import REPOSITORY  # noqa: E402
from server import ROOT  # noqa: E402
from server.backends import environment, prepare  # noqa: E402
from server.flags import Ports, command, restriction_flags  # noqa: E402
from server.launch import ports_in_use  # noqa: E402
from server.supervise import Supervisor  # noqa: E402


def admin_key(build: Path) -> str:
    if key := os.environ.get("TRITON_ADMIN_KEY"):
        return key
    key = secrets.token_urlsafe(32)
    path = build / "admin-key"
    path.unlink(missing_ok=True)
    path.touch(mode=0o600)
    path.write_text(key + "\n")
    print(f"admin key for this start (TRITON_ADMIN_KEY was not set): {path}", flush=True)
    return key


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    repository = Path(os.environ.get("MODEL_REPOSITORY", REPOSITORY)).resolve()
    ports = Ports(
        int(os.environ.get("HTTP_PORT", 8000)),
        int(os.environ.get("GRPC_PORT", 8001)),
        int(os.environ.get("METRICS_PORT", 8002)),
    )
    bind = os.environ.get("BIND", "127.0.0.1")
    if busy := ports_in_use(ports, bind):
        sys.exit(f"cannot start: {', '.join(busy)} on {bind} already in use (another server?)")
    if key := os.environ.get("TRITON_ADMIN_KEY"):
        try:
            restriction_flags(key)
        except ValueError as error:
            sys.exit(f"cannot start: TRITON_ADMIN_KEY: {error}")
    build = ROOT / "build"
    model_control = os.environ.get("MODEL_CONTROL", "poll")
    key = admin_key(build)  # tritonserver's restricted endpoints, and the supervisor's explicit-mode heals
    argv = command(
        repository,
        prepare(repository, build),
        ports,
        bind,
        int(os.environ.get("POLL_SECS", 5)),
        model_control=model_control,
        admin_key=key,
    )
    print(f"tritonserver on {repository}: HTTP {ports.http}, gRPC {ports.grpc}, metrics {ports.metrics}", flush=True)
    if os.environ.get("SUPERVISE", "1") == "0":
        os.execve(argv[0], argv, environment())  # foreground: Ctrl-C goes straight to tritonserver
    sys.exit(Supervisor(argv, environment(), ports, repository, poll=model_control == "poll", admin_key=key).run())


if __name__ == "__main__":
    main()
