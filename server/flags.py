"""tritonserver's command line: ports, model control, the admin key's restricted endpoints, the exit timeout, and
a name prefix for its stubs' shared-memory regions that no other server shares."""

import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from conventions import ADMIN_HEADER
from server.backends import TRITON

# Endpoints that load code, map memory into the server or change what it writes: callers need the admin key.
# Inference, health, metadata, model config and statistics stay open.
ADMIN_APIS = ("model-repository", "shared-memory", "trace", "logging")
EXIT_TIMEOUT_SECS = 5  # unloading takes about 2 s here; well inside a 10 s grace period
ADMIN_KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,}")  # no ':', '=' or ',' (the flag's separators); not guessable
REGION_PREFIX_FLAG = "--backend-config=python,shm-region-prefix-name="


@dataclass(frozen=True)
class Ports:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002


def model_control_args(mode: str, poll_secs: int) -> list[str]:
    """poll: Triton rescans the repository every poll_secs and loads what changed, so dropping a version in is enough.
    explicit: everything is loaded at start, later only on the repository load API (release/deploy.py --server)."""
    if mode == "poll":
        return ["--model-control-mode=poll", f"--repository-poll-secs={poll_secs}"]
    if mode == "explicit":
        return ["--model-control-mode=explicit", "--load-model=*"]
    raise ValueError(f"model control mode must be 'poll' or 'explicit', got {mode!r}")


def restriction_flags(admin_key: str) -> list[str]:
    """tritonserver's own header check on the admin endpoints, for gRPC and HTTP alike."""
    if not ADMIN_KEY_PATTERN.fullmatch(admin_key):
        raise ValueError("the admin key must be at least 16 characters from A-Z, a-z, 0-9, '_' and '-'")
    apis = ",".join(ADMIN_APIS)
    return [
        f"--grpc-restricted-protocol={apis}:{ADMIN_HEADER}={admin_key}",
        f"--http-restricted-api={apis}:{ADMIN_HEADER}={admin_key}",
    ]


def command(
    repository: Path,
    backends: Path,
    ports: Ports,
    bind: str,
    poll_secs: int,
    *,
    model_control: str = "poll",
    admin_key: str | None = None,
) -> list[str]:
    """tritonserver's argv; with an admin key, the ADMIN_APIS answer only requests that carry it."""
    argv = [
        str(TRITON / "bin" / "tritonserver"),
        f"--model-repository={repository}",
        f"--backend-directory={backends}",
        f"--cache-directory={TRITON / 'caches'}",
        f"--http-address={bind}",
        f"--http-port={ports.http}",
        f"--grpc-address={bind}",
        f"--grpc-port={ports.grpc}",
        f"--metrics-address={bind}",
        f"--metrics-port={ports.metrics}",
        *model_control_args(model_control, poll_secs),
        # How long a stopping server waits for in-flight requests before it exits anyway (default 30 s): bounded
        # well inside a container's 10 s grace period, also when it stops on its own (its launcher died).
        f"--exit-timeout-secs={EXIT_TIMEOUT_SECS}",
        # The Python backend's default prefix plus this server's own token (server/processes.py regions_named).
        f"{REGION_PREFIX_FLAG}triton_python_backend_shm_region_{secrets.token_hex(6)}_",
        "--log-info=true",
    ]
    return argv + (restriction_flags(admin_key) if admin_key else [])


def region_prefix(argv: list[str]) -> str | None:
    """The prefix of the stub regions' names of the tritonserver started with `argv` (None: not one `command` made).

    Each server gets its own, so that its regions are known by name alone: also one made the moment before the
    server was killed, before any stub (or a /proc/<pid>/maps that is gone with the server) could record it."""
    return next((arg.removeprefix(REGION_PREFIX_FLAG) for arg in argv if arg.startswith(REGION_PREFIX_FLAG)), None)
