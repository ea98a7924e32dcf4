"""Readiness that tells the truth: a canary inference through both ensembles, with a bounded time.

tritonserver 2.51 keeps answering ready on /v2/health/ready and /v2/models/<m>/ready after a Python-backend stub
died, while every request to that model fails ("Stub process 'fuse_0' is not healthy"). A canary through
`feedback_text` (tokenizer, transformer, textcnn, fuse) and `feedback` (the same members and fuse) uses
every model, so it fails exactly when some model cannot serve.

    python -m server.probe [--url http://127.0.0.1:8000] [--timeout 3]    # exit 0 ready, 1 not ready

Standard library only (JSON over HTTP), so it runs as an exec probe in any image that has python3.
"""

import argparse
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

# Ids 5..9 lie inside any vocabulary the exporter writes (it keeps the first ids for special tokens).
CANARIES = {
    "feedback_text": [{"name": "TEXT", "datatype": "BYTES", "shape": [1, 1], "data": ["the invoice charged me twice"]}],
    "feedback": [
        {"name": "INPUT_IDS", "datatype": "INT64", "shape": [1, 5], "data": [5, 6, 7, 8, 9]},
        {"name": "ATTENTION_MASK", "datatype": "INT64", "shape": [1, 5], "data": [1, 1, 1, 1, 1]},
    ],
}
UNHEALTHY_STUB = re.compile(r"Stub process '(?P<model>.+?)(?:_\d+)+' is not healthy")  # instance <model>_<group>_<n>


@dataclass(frozen=True)
class Check:
    model: str
    ok: bool
    seconds: float
    error: str = ""

    @property
    def broken_model(self) -> str | None:
        """The model whose stub died, when the error names one."""
        found = UNHEALTHY_STUB.search(self.error)
        return found["model"] if found else None


def canary(url: str, model: str, timeout: float) -> Check:
    body = json.dumps({"inputs": CANARIES[model], "outputs": [{"name": "PROBS"}]}).encode()
    request = urllib.request.Request(
        f"{url}/v2/models/{model}/infer", data=body, headers={"Content-Type": "application/json"}
    )
    start = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            (probs,) = json.load(answer)["outputs"]
        if abs(sum(probs["data"]) - 1) > 1e-3:
            return Check(model, False, time.monotonic() - start, f"PROBS do not sum to 1: {probs['data']}")
        return Check(model, True, time.monotonic() - start)
    except urllib.error.HTTPError as error:
        message = error.read().decode(errors="replace")
        return Check(model, False, time.monotonic() - start, f"HTTP {error.code}: {message}")
    except (OSError, ValueError, KeyError) as error:  # refused, timed out, or an answer that is not inference JSON
        return Check(model, False, time.monotonic() - start, f"{type(error).__name__}: {error}")


def server_ready(url: str, timeout: float) -> bool:
    """Triton's own readiness: every model loaded. It says when loading ended, not that every model can serve."""
    try:
        with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=timeout) as answer:
            return answer.status == 200
    except OSError:
        return False


def probe(url: str, timeout: float = 3.0) -> list[Check]:
    """Both canaries at once, so the whole probe takes at most about `timeout` seconds."""
    with ThreadPoolExecutor(len(CANARIES)) as pool:
        return list(pool.map(lambda model: canary(url, model, timeout), CANARIES))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_url = f"http://127.0.0.1:{os.environ.get('HTTP_PORT', 8000)}"
    parser.add_argument("--url", default=default_url, help=f"the server's HTTP address (default {default_url})")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds each canary may take (default 3)")
    args = parser.parse_args(argv)
    checks = probe(args.url.rstrip("/"), args.timeout)
    for check in checks:
        print(f"{check.model}: {'ok' if check.ok else 'FAILED'} in {check.seconds:.3f} s {check.error}".rstrip())
    sys.exit(0 if all(check.ok for check in checks) else 1)


if __name__ == "__main__":
    main()
