"""Deploy a new transformer version while `feedback` is under steady load, roll it back, and report what clients saw.

    python -m perf.model_swap [--seconds 45] [--threads 3] [--model-control poll|explicit] [--poll-secs 5]
                              [--output perf/results/model_swap]      (make bench-swap)

Starts its own tritonserver on a copy of model_repository/ (poll mode every 5 s as `make serve` runs, or explicit),
runs closed-loop gRPC clients (batch 4) for the whole time, deploys a new version (harness/candidates.py: visibly
different answers, same accuracy) at 1/3 of the time and rolls back at 2/3. Prints failed requests, p50/p99 latency
in steady state and in each swap window (from the command until one second after the first answer of the new
version), and each swap's delay: command to first answer of the new version (poll wait + load + warm-up). Writes
run.json (machine, start, commit, settings) and summary.md (what it prints) into the folder <output>.
"""

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import tritonclient.http as httpclient

from harness import candidates
from harness.steady_load import (
    LOAD_ROWS,
    TRANSFORMER_COLUMN,
    SteadyLoad,
    answers,
    served_by,
    served_versions,
    wait_until,
)
from perf.runs import start_scenario, write_summary
from python_backend.layout import latest_version
from release.deploy import deploy, rollback
from release.gates import held_out
from server import ROOT
from server.launch import serving

REPOSITORY = ROOT / "model_repository"


def percentiles(latencies: list[float]) -> str:
    if not latencies:
        return "no requests"
    p50, p99 = np.percentile(np.array(latencies) * 1000, [50, 99])
    return f"p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  ({len(latencies)} requests)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=45, help="steady load before, between and after the swaps")
    parser.add_argument("--threads", type=int, default=3)
    parser.add_argument("--model-control", choices=("poll", "explicit"), default="poll")
    parser.add_argument("--poll-secs", type=int, default=5)
    parser.add_argument("--log", type=Path, help="keep the server's log here (default: deleted with the scratch copy)")
    parser.add_argument("--output", type=Path, default=ROOT / "perf" / "results" / "model_swap")
    args = parser.parse_args()
    start_scenario(args.output, args)

    with tempfile.TemporaryDirectory(prefix="model-swap-") as scratch:
        repo = Path(scratch) / "model_repository"
        shutil.copytree(REPOSITORY, repo, ignore=shutil.ignore_patterns("__pycache__"))
        model_dir = repo / "transformer"
        old = latest_version(model_dir).name
        source = candidates.shifted(repo, "transformer", Path(scratch) / "candidate")
        versions = {"old": answers(model_dir, old), "new": answers(source, "1")}
        log = args.log or Path(scratch) / "server.log"
        with serving(repo, poll_secs=args.poll_secs, log=log, model_control=args.model_control) as running:
            server = running.http_url if args.model_control == "explicit" else None
            ids, mask, _ = held_out(REPOSITORY)
            swaps = []  # (what, commanded at, visible to Triton at, the version that must answer after it)
            phase = args.seconds / 3
            client = httpclient.InferenceServerClient(running.http_url)
            with SteadyLoad(running.grpc_url, ids[:LOAD_ROWS], mask[:LOAD_ROWS], args.threads) as load:
                for label, action, expect, version in (
                    ("deploy", lambda: deploy(repo, "transformer", source, server), "new", str(int(old) + 1)),
                    ("rollback", lambda: rollback(repo, "transformer", server=server), "old", old),
                ):
                    time.sleep(phase)
                    commanded = time.monotonic()
                    action()  # returns once renamed (poll) or loaded (explicit)
                    swaps.append((label, commanded, time.monotonic(), expect))
                    wait_until(lambda v=version: served_versions(client, "transformer") == [v], f"{label} to serve")
                time.sleep(phase)
            client.close()
    lines = report(args, load, versions, swaps)
    print("\n" + "\n".join(lines))
    write_summary(args.output, "model_swap", lines)


def report(args, load: SteadyLoad, versions: dict[str, np.ndarray], swaps: list) -> list[str]:
    records = load.records
    mode = f"poll mode (every {args.poll_secs} s)" if args.model_control == "poll" else "explicit mode"
    sources = [served_by(r, TRANSFORMER_COLUMN, versions) for r in records]
    seconds = records[-1].end - records[0].start
    lines = [
        f"{mode}, {args.threads} clients, batch {LOAD_ROWS}, "
        f"{seconds:.0f} s of load: {len(records)} requests, {len(load.failures())} failed, "
        f"{sources.count(None)} answered by an unknown version"
    ]
    in_swap = np.zeros(len(records), dtype=bool)
    ends = [swap[1] for swap in swaps[1:]] + [records[-1].end]  # each swap is judged until the next is commanded
    for (label, commanded, visible, expect), until in zip(swaps, ends, strict=True):
        first = min(r.end for r, s in zip(records, sources, strict=True) if r.start > commanded and s == expect)
        late = [r for r, s in zip(records, sources, strict=True) if first < r.start < until and s != expect]
        window = np.array([commanded <= r.end and r.start <= first + 1 for r in records])
        in_swap |= window
        lines.append(
            f"{label:>8}: command {visible - commanded:5.2f} s (checks; explicit mode: + load and warm-up); "
            f"first answer of the {expect} version {first - visible:5.2f} s after it returned; "
            f"{len(late)} later answers from the other version"
        )
        during = [r.end - r.start for r, w in zip(records, window, strict=True) if w]
        lines.append(f"{'':>8}  swap window   {percentiles(during)}")
    steady = [r.end - r.start for r, w in zip(records, in_swap, strict=True) if not w]
    lines.append(f"{'':>8}  steady state  {percentiles(steady)}")
    return lines


if __name__ == "__main__":
    main()
