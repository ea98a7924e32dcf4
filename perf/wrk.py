"""wrk (Debian's HTTP load generator: C, one epoll thread) drives the text-in comparison, because it is the one
client that every system can be asked with: perf_analyzer speaks only Triton's protocol (KServe v2, with model
metadata and config calls that a mosec server has no route for).

It keeps `connections` HTTP/1.1 keep-alive connections each with one request in flight (batch-1 clients at that
concurrency, as perf_analyzer's concurrency mode), cycling through one request body per comment, and prints the
number of requests, errors and latency percentiles, which a Lua `done` hook writes as JSON.
"""

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from server import debian

BINARY = Path("/usr/bin/wrk")
TIMEOUT_S = 30  # per request: a long comment in a deep queue can take seconds, never this long


@dataclass(frozen=True)
class Measured:
    requests: int
    errors: int  # connection errors, timeouts and answers other than 2xx/3xx
    seconds: float
    p50_us: float
    p95_us: float
    p99_us: float

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds


class Failed(RuntimeError):
    pass


def ensure() -> None:
    debian.ensure({str(BINARY): "wrk"}, "the text-in bench (wrk)")


def script(path: str, bodies: list[str], file: Path) -> Path:
    """Write `file`: a Lua script that POSTs `bodies` to `path` in turn and reports the run as one JSON line."""
    if any("]==]" in body for body in bodies):
        raise ValueError("a request body holds the Lua long-bracket terminator ]==]")
    listed = ",\n".join(f"[==[{body}]==]" for body in bodies)
    lua = f"""local bodies = {{
{listed}
}}
local next_body = 0
local headers = {{["Content-Type"] = "application/json"}}
request = function()
  next_body = next_body % #bodies + 1
  return wrk.format("POST", "{path}", headers, bodies[next_body])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{{"requests": %d, "errors": %d, "microseconds": %d, "p50_us": %d, "p95_us": %d, "p99_us": %d}}\\n',
    summary.requests, e.connect + e.read + e.write + e.status + e.timeout, summary.duration,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""
    file.write_text(lua)
    return file


def measure(url: str, lua: Path, connections: int, seconds: float, log: Path) -> Measured:
    """One wrk run against http://`url`; its output goes to `log`."""
    argv = [str(BINARY), "-t1", f"-c{connections}", f"-d{seconds:g}s", f"--timeout={TIMEOUT_S}s", "-s", str(lua)]
    done = subprocess.run([*argv, f"http://{url}"], capture_output=True, text=True, timeout=seconds + TIMEOUT_S + 30)
    log.write_text(" ".join(argv) + "\n" + done.stdout + done.stderr)
    lines = [line for line in done.stdout.splitlines() if line.startswith('{"requests"')]
    if done.returncode != 0 or not lines:
        raise Failed(f"wrk exited {done.returncode}: {(done.stderr or done.stdout).strip()[-300:]}")
    found = json.loads(lines[-1])
    if not found["requests"]:
        raise Failed(f"no request completed in {seconds:g} s")
    return Measured(
        found["requests"],
        found["errors"],
        found["microseconds"] / 1e6,
        found["p50_us"],
        found["p95_us"],
        found["p99_us"],
    )
