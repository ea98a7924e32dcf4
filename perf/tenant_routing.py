"""What per-customer routing costs: the same request through each path a tenant's request can take.

    python -m perf.tenant_routing [--seconds 12] [--rounds 4] [--threads 1 4] [--output perf/results/tenant_routing]
                                                                                       (make bench-tenants)

Starts its own tritonserver on a copy of model_repository/, deploys a custom transformer for tenant `acme`, then runs
closed-loop gRPC clients (batch 4) against, in turn: `feedback` (the default ensemble), `feedback__acme` (the
generated per-tenant ensemble, chosen by the client), and `feedback_routed` with TENANT=acme and without TENANT
(server-side routing: one BLS call from a Python model into the ensemble). Prints p50/p99 and throughput of each,
and writes run.json (machine, start, commit, settings) and summary.md (what it prints) into the folder <output>.
"""

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from harness import candidates
from harness.steady_load import LOAD_ROWS, SteadyLoad
from perf.model_swap import percentiles
from perf.runs import start_scenario, write_summary
from release.deploy import deploy
from release.gates import held_out
from server import ROOT
from server.launch import serving

PATHS = (
    ("feedback", None, "default ensemble"),
    ("feedback__acme", None, "per-tenant ensemble, picked by the client"),
    ("feedback_routed", "acme", "TENANT=acme, routed by BLS"),
    ("feedback_routed", None, "no TENANT, routed by BLS"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=12, help="per path and client count")
    parser.add_argument("--rounds", type=int, default=4, help="the seconds are split into this many interleaved slices")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--output", type=Path, default=ROOT / "perf" / "results" / "tenant_routing")
    args = parser.parse_args()
    start_scenario(args.output, args)
    ids, mask, _ = held_out(ROOT / "model_repository")
    with tempfile.TemporaryDirectory(prefix="tenant-routing-") as scratch:
        repo = Path(scratch) / "model_repository"
        shutil.copytree(ROOT / "model_repository", repo, ignore=shutil.ignore_patterns("__pycache__"))
        with serving(repo, log=Path(scratch) / "server.log") as server:
            source = candidates.shifted(repo, "transformer", Path(scratch) / "candidate")
            deploy(repo, "transformer", source, server=server.http_url, tenant="acme")
            rows = []
            for threads in args.threads:
                latencies, busy = {path: [] for path in PATHS}, dict.fromkeys(PATHS, 0.0)
                for _ in range(args.rounds):  # interleaved, so that other jobs on the machine hit every path alike
                    for path in PATHS:
                        model, tenant, _ = path
                        load = SteadyLoad(server.grpc_url, ids[:LOAD_ROWS], mask[:LOAD_ROWS], threads, model, tenant)
                        with load:
                            time.sleep(args.seconds / args.rounds)
                        assert not load.failures(), load.failures()[0].error
                        latencies[path] += [r.end - r.start for r in load.records]
                        busy[path] += load.records[-1].end - load.records[0].start
                for path in PATHS:
                    rate = len(latencies[path]) / busy[path]
                    rows.append(
                        f"{threads:>2} clients  {path[2]:<42} {percentiles(latencies[path])}  {rate:6.0f} req/s"
                    )
    lines = [f"batch {LOAD_ROWS}, {args.seconds:.0f} s per line in {args.rounds} interleaved slices, closed-loop gRPC"]
    lines += rows
    print("\n" + "\n".join(lines))
    write_summary(args.output, "tenant_routing", lines)


if __name__ == "__main__":
    main()
