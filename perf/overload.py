"""Overload: `feedback_text` at about 10x its sustainable rate, with perf_analyzer, on the bounded member queues.

python -m perf.overload [--factor 10] [--seconds 20] [--output perf/results/overload]    (make bench-overload)

Starts its own tritonserver on free ports. Measures the sustainable rate (perf_analyzer at concurrency 4), then
offers `factor` times that rate (request-rate mode) for `seconds`, and reports what the server did with it: requests
offered, succeeded and refused by kind (from the server's own failure counters and log), latency of what
succeeded, and the server's RSS (tritonserver and stubs) before, at peak and after. Then checks that it still
answers a request correctly. Writes run.json (machine, start, commit, settings) and summary.md (what it prints) into
the folder <output>; exits 1 when the server no longer answers correctly.
"""

import argparse
import datetime
import platform
import tempfile
import threading
import time
from pathlib import Path

from harness import triton_stats
from perf import perf_analyzer
from perf.procstats import rss_bytes
from perf.runs import start_scenario, write_summary
from server import ROOT, probe
from server.launch import serving

REFUSALS = {"queue full": "Exceeds maximum queue size", "queue timeout": "Request timeout expired"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--factor", type=float, default=10)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--output", type=Path, default=ROOT / "perf" / "results" / "overload")
    args = parser.parse_args()
    start_scenario(args.output, args)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        log, pa_log = work / "server.log", work / "perf_analyzer.log"
        with serving(ROOT / "model_repository", log=log) as server:
            ports = server.ports
            url, data = server.grpc_url, perf_analyzer.text_input_data(work)

            def measure(name: str, load: list[str], seconds: float) -> dict[str, float]:
                argv = perf_analyzer.command(
                    "feedback_text", url, "grpc", load, data, perf_analyzer.any_3_windows(int(seconds * 1000 / 3)),
                    work / f"{name}.csv",
                )  # fmt: skip
                return perf_analyzer.run(argv, pa_log, check=False)

            steady = measure("steady", perf_analyzer.concurrency(4), 15)
            rate = int(steady["Inferences/Second"] * args.factor)
            rss = {"before": rss_bytes(server.process.pid)}
            peak, done = [rss["before"]], threading.Event()

            def sample():
                while not done.wait(0.5):
                    peak.append(rss_bytes(server.process.pid))

            sampler = threading.Thread(target=sample)
            sampler.start()
            counts = {
                outcome: triton_stats.request_counts(ports.metrics, outcome) for outcome in ("success", "failure")
            }
            began = time.monotonic()
            flood = measure("flood", [f"--request-rate-range={rate}", "--max-threads=32"], args.seconds)
            elapsed = time.monotonic() - began
            done.set()
            sampler.join()
            time.sleep(3)  # what was queued drains
            rss["peak"], rss["after"] = max(peak), rss_bytes(server.process.pid)
            succeeded, failed = (
                triton_stats.request_counts(ports.metrics, outcome)["feedback_text"] - counts[outcome]["feedback_text"]
                for outcome in ("success", "failure")
            )
            text = log.read_text(errors="replace") + pa_log.read_text(errors="replace")
            kinds = {kind: text.count(marker) for kind, marker in REFUSALS.items()}
            healthy = all(check.ok for check in probe.probe(f"http://{server.http_url}"))
    lines = [
        f"# Overload: feedback_text at {args.factor:g}x the sustainable rate ({datetime.date.today()}, "
        f"{platform.machine()}, {platform.node()})",
        "",
        f"sustainable (perf_analyzer, concurrency 4, batch 1): {steady['Inferences/Second']:.0f} infer/s, "
        f"p99 {steady['p99 latency'] / 1000:.1f} ms",
        f"offered: {rate} requests/s for {elapsed:.0f} s (perf_analyzer request-rate mode)",
        f"answered by the server: {succeeded} succeeded, {failed} failed",
        f"refusals seen in the logs by kind: {kinds}",
        f"perf_analyzer's last window: {flood or 'none (it stopped at the first refused request)'}",
        f"server RSS (tritonserver + stubs): before {rss['before'] / 2**20:.0f} MiB, peak {rss['peak'] / 2**20:.0f}"
        f" MiB, after {rss['after'] / 2**20:.0f} MiB",
        f"canary probe after the flood: {'ok' if healthy else 'FAILED'}",
    ]
    print("\n".join(lines))
    write_summary(args.output, "overload", lines)
    raise SystemExit(0 if healthy else 1)


if __name__ == "__main__":
    main()
