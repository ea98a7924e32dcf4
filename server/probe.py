"""Readiness that tells the truth: canary inferences through every ensemble, with checked answers, in bounded time.

tritonserver 2.51 keeps answering ready on /v2/health/ready and /v2/models/<m>/ready after a Python-backend stub
died, while every request to that model fails ("Stub process 'fuse_0' is not healthy"). The canaries go through
`feedback_text` (tokenizer, members, fuse), `feedback`, `feedback_routed` (the router, then `feedback`) and, for
every tenant listed in tenants.json (re-read at each probe), `feedback_routed` with that TENANT (the tenant's own
ensemble and models), and, when tenant heads are deployed, `feedback_tenant` with the newest head: together they use
every model, so the probe fails exactly when some model cannot serve. An answer must also be right: the canary
comments' labels must be the ones export recorded for them (canary.json in the repository; a tenant's, from its own
models, canary__<tenant>.json, written by its deploy; a head's, canary__head__<tenant>.json, written by `tenant
add`), so a model or head that serves wrong answers fails too.

    python -m server.probe [--url http://127.0.0.1:8000] [--repository DIR] [--timeout 3]  # exit 0 ready, 1 not

Standard library and conventions.py only (JSON over HTTP), so it runs as an exec probe in any image that has
python3 and those two files.
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
from pathlib import Path

import conventions
from conventions import CANARY_FILE, HEAD_CANARY_FILE, TENANTS_FILE, tenant_canary_file

REPOSITORY = Path(os.environ.get("MODEL_REPOSITORY") or conventions.REPOSITORY)
UNHEALTHY_STUB = re.compile(r"Stub process '(?P<model>.+?)(?:_\d+)+' is not healthy")  # instance <model>_<group>_<n>


@dataclass(frozen=True)
class Check:
    model: str  # the canary's name: the model called, and the tenant if any
    ok: bool
    seconds: float
    error: str = ""

    @property
    def timed_out(self) -> bool:
        return not self.ok and "timed out" in self.error

    @property
    def broken_model(self) -> str | None:
        """The model whose stub died, when the error names one."""
        found = UNHEALTHY_STUB.search(self.error)
        return found["model"] if found else None


@dataclass(frozen=True)
class Canary:
    name: str
    model: str
    inputs: list[dict]
    labels: list[str]  # the right answers
    outputs: tuple[str, str] = ("PROBS", "LABEL")  # the probabilities and the label it answers with


def tensor(name: str, datatype: str, rows: list) -> dict:
    shape = [len(rows), len(rows[0]) if isinstance(rows[0], list) else 1]
    data = [value for row in rows for value in (row if isinstance(row, list) else [row])]
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def ids_of(recorded: dict) -> list[dict]:
    return [
        tensor("INPUT_IDS", "INT64", recorded["input_ids"]),
        tensor("ATTENTION_MASK", "INT64", recorded["attention_mask"]),
    ]


def canaries(repository: Path) -> list[Canary]:
    """The default ensemble's canaries, then each tenant's; raises OSError or ValueError for a missing or broken
    canary file."""
    recorded = json.loads((repository / CANARY_FILE).read_text())
    labels = recorded["labels"]
    found = [
        Canary("feedback_text", "feedback_text", [tensor("TEXT", "BYTES", recorded["texts"])], labels),
        Canary("feedback", "feedback", ids_of(recorded), labels),
        Canary("feedback_routed", "feedback_routed", ids_of(recorded), labels),
    ]
    try:
        tenants = sorted(json.loads((repository / TENANTS_FILE).read_text()))
    except FileNotFoundError:
        tenants = []
    for tenant in tenants:
        own = json.loads((repository / tenant_canary_file(tenant)).read_text())
        routed = ids_of(own) + [tensor("TENANT", "BYTES", [tenant] * len(own["labels"]))]
        found.append(Canary(f"feedback_routed (tenant {tenant})", "feedback_routed", routed, own["labels"]))
    return found + head_canary(repository)


def head_canary(repository: Path) -> list[Canary]:
    """`feedback_tenant` with the newest tenant head trained on the live transformer (a canary per head would make a
    probe of a thousand requests): its texts must get the labels its head answered when it was deployed. A head
    trained on another transformer is stale, not broken (`tenant list` marks it to replace): it is not probed, so a
    transformer release does not turn every server unready. None without such a head."""
    live = transformer_stamp(repository)
    newest_first = []
    for file in repository.glob(HEAD_CANARY_FILE.format(tenant="*")):
        try:
            newest_first.append((file.stat().st_mtime_ns, file))
        except FileNotFoundError:  # removed since the glob
            continue
    for _, file in sorted(newest_first, reverse=True):  # read one by one: usually only the newest is
        try:
            own = json.loads(file.read_text())
        except FileNotFoundError:
            continue
        if own.get("transformer") != live:
            continue
        prefix, suffix = HEAD_CANARY_FILE.split("{tenant}")
        tenant = file.name.removeprefix(prefix).removesuffix(suffix)
        inputs = [tensor("TEXT", "BYTES", own["texts"]), tensor("TENANT", "BYTES", [tenant] * len(own["texts"]))]
        outputs = ("TENANT_PROBS", "TENANT_LABEL")
        return [Canary(f"feedback_tenant (tenant {tenant})", "feedback_tenant", inputs, own["labels"], outputs)]
    return []


def transformer_stamp(repository: Path) -> dict | None:
    """Which transformer file serves (its latest version's): path in the repository, size and mtime, cheap to
    compare at every probe (release/heads.py writes it into a head's canary)."""
    versions = [path for path in (repository / "transformer").glob("[0-9]*") if path.name.isdigit()]
    if not versions:
        return None
    model = next(max(versions, key=lambda path: int(path.name)).glob("model.*"), None)
    if model is None:
        return None
    status = model.stat()
    return {"file": model.relative_to(repository).as_posix(), "size": status.st_size, "mtime_ns": status.st_mtime_ns}


def wrong_answer(outputs: dict[str, dict], expected: list[str], names: tuple[str, str] = ("PROBS", "LABEL")) -> str:
    """Why an answer is wrong, or "" when it is right; `names`: its probabilities' and its label's outputs."""
    probs_name, label_name = names
    probs, rows = outputs[probs_name]["data"], outputs[probs_name]["shape"][0]
    width = len(probs) // max(rows, 1)
    for row in range(rows):
        total = sum(probs[row * width : (row + 1) * width])
        if abs(total - 1) > 1e-3:
            return f"{probs_name} row {row} sums to {total:.4f}, not 1"
    if outputs[label_name]["data"] != expected:
        return f"{label_name} {outputs[label_name]['data']}, the canary comments' labels are {expected}"
    return ""


def canary(url: str, check: Canary, timeout: float) -> Check:
    outputs = [{"name": name} for name in check.outputs]
    body = json.dumps({"inputs": check.inputs, "outputs": outputs}).encode()
    request = urllib.request.Request(
        f"{url}/v2/models/{check.model}/infer", data=body, headers={"Content-Type": "application/json"}
    )
    start = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            named = {output["name"]: output for output in json.load(answer)["outputs"]}
        error = wrong_answer(named, check.labels, check.outputs)
        return Check(check.name, not error, time.monotonic() - start, error)
    except urllib.error.HTTPError as error:
        message = error.read().decode(errors="replace")
        return Check(check.name, False, time.monotonic() - start, f"HTTP {error.code}: {message}")
    except (OSError, ValueError, KeyError) as error:  # refused, timed out, or an answer that is not inference JSON
        return Check(check.name, False, time.monotonic() - start, f"{type(error).__name__}: {error}")


def server_ready(url: str, timeout: float) -> bool:
    """Triton's own readiness: every model loaded. It says when loading ended, not that every model can serve."""
    try:
        with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=timeout) as answer:
            return answer.status == 200
    except OSError:
        return False


def probe(url: str, timeout: float = 3.0, repository: Path = REPOSITORY) -> list[Check]:
    """Every canary at once, so the whole probe takes at most about `timeout` seconds."""
    try:
        checks = canaries(repository)
    except (OSError, ValueError, KeyError) as error:
        return [Check("canary", False, 0.0, f"a canary file in {repository} is missing or broken: {error}")]
    with ThreadPoolExecutor(len(checks)) as pool:
        return list(pool.map(lambda check: canary(url, check, timeout), checks))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_url = f"http://127.0.0.1:{os.environ.get('HTTP_PORT', 8000)}"
    parser.add_argument("--url", default=default_url, help=f"the server's HTTP address (default {default_url})")
    parser.add_argument("--repository", type=Path, default=REPOSITORY, help=f"default {REPOSITORY}")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds each canary may take (default 3)")
    args = parser.parse_args(argv)
    checks = probe(args.url.rstrip("/"), args.timeout, args.repository)
    for check in checks:
        print(f"{check.model}: {'ok' if check.ok else 'FAILED'} in {check.seconds:.3f} s {check.error}".rstrip())
    sys.exit(0 if all(check.ok for check in checks) else 1)


if __name__ == "__main__":
    main()
