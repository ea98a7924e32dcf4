"""Soak: `feedback_text` under steady perf_analyzer load (system shared memory and plain gRPC, side by side).

python -m perf.soak [--seconds 600] [--output perf/results/soak]      (make soak; SOAK_SECONDS=120 make soak)

Starts its own tritonserver on free ports, runs two perf_analyzer loops for the whole time (one with
`--shared-memory system`, one plain; each a series of ~10 s measurements), and every 2 s samples the server's
resident memory (tritonserver and its stubs) and the /dev/shm regions it maps. Writes into the folder <output>:
run.json (machine, start, commit, settings), soak.csv (one row per sample, with the latest p50/p99 latency and
throughput of each loop), soak.png and summary.md (the summary it prints), and exits 1 when RSS or /dev/shm grew
beyond the bounds between the first and the last fifth of the run (after warm-up), or when a request failed.
"""

import argparse
import csv
import datetime
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path

from harness import triton_stats
from perf import perf_analyzer
from perf.procstats import rss_bytes, shm_bytes
from perf.runs import start_scenario, write_summary
from server import ROOT
from server.launch import serving

RSS_BOUND = 64 * 2**20  # bytes of growth tolerated: allocator arenas settle, a leak keeps going
SHM_BOUND = 16 * 2**20
SAMPLE_SECONDS = 2.0
MODES = {"shm": True, "plain": False}


def load_loop(mode: str, url: str, data: Path, work: Path, until: float, latest: dict, errors: list) -> None:
    """perf_analyzer measurements back to back until `until`; each one's figures go into latest[mode]."""
    csv_path, log = work / f"{mode}.csv", work / f"{mode}.log"
    while time.monotonic() < until:
        windows = perf_analyzer.any_3_windows(3000)
        argv = perf_analyzer.command(
            "feedback_text", url, "grpc", perf_analyzer.concurrency(2), data, windows, csv_path, shm=MODES[mode]
        )
        try:
            row = perf_analyzer.run(argv, log)
        except perf_analyzer.Failed as error:
            errors.append(f"{mode}: {error}")
            return
        latest[mode] = {
            "infer_per_s": row["Inferences/Second"],
            "p50_ms": row["p50 latency"] / 1000,
            "p99_ms": row["p99 latency"] / 1000,
        }


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [row["t_s"] for row in rows]
    figure, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    axes[0].plot(t, [row["rss_mib"] for row in rows])
    axes[0].set_ylabel("server RSS (MiB)")
    axes[1].plot(t, [row["shm_mib"] for row in rows])
    axes[1].set_ylabel("/dev/shm mapped (MiB)")
    for mode in MODES:
        axes[2].plot(t, [row[f"{mode}_p99_ms"] for row in rows], label=f"{mode} p99")
        axes[2].plot(t, [row[f"{mode}_p50_ms"] for row in rows], label=f"{mode} p50")
    axes[2].set_ylabel("latency (ms)")
    axes[2].set_xlabel("seconds")
    axes[2].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def growth(rows: list[dict], key: str) -> float:
    """Median of the last fifth minus median of the first fifth of the samples."""
    fifth = max(1, len(rows) // 5)
    return statistics.median(r[key] for r in rows[-fifth:]) - statistics.median(r[key] for r in rows[:fifth])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--output", type=Path, default=ROOT / "perf" / "results" / "soak")
    args = parser.parse_args()
    start_scenario(args.output, args)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with serving(ROOT / "model_repository", log=work / "server.log", admin_key=None) as server:
            failed_before = sum(triton_stats.request_counts(server.ports.metrics, "failure").values())
            until = time.monotonic() + args.seconds
            latest = {mode: {"infer_per_s": 0.0, "p50_ms": 0.0, "p99_ms": 0.0} for mode in MODES}
            errors: list[str] = []
            url, data = server.grpc_url, perf_analyzer.text_input_data(work)
            loops = [
                threading.Thread(target=load_loop, args=(mode, url, data, work, until, latest, errors))
                for mode in MODES
            ]
            for loop in loops:
                loop.start()
            rows, began = [], time.monotonic()
            while any(loop.is_alive() for loop in loops):
                regions, shm = shm_bytes(server.process.pid)
                row = {"t_s": round(time.monotonic() - began, 1), "rss_mib": rss_bytes(server.process.pid) / 2**20}
                row |= {"shm_regions": regions, "shm_mib": shm / 2**20}
                for mode in MODES:
                    row |= {f"{mode}_{key}": value for key, value in latest[mode].items()}
                rows.append(row)
                time.sleep(SAMPLE_SECONDS)
            failed = sum(triton_stats.request_counts(server.ports.metrics, "failure").values()) - failed_before
    warm = [row for row in rows if row["t_s"] >= min(30, args.seconds / 5)]  # after warm-up
    table, image = args.output / "soak.csv", args.output / "soak.png"
    with table.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, image)
    rss_growth, shm_growth = growth(warm, "rss_mib"), growth(warm, "shm_mib")
    p99 = {mode: (warm[0][f"{mode}_p99_ms"], warm[-1][f"{mode}_p99_ms"]) for mode in MODES}
    lines = [
        f"soak {args.seconds:.0f} s on {platform.machine()}, {datetime.date.today()}: {len(rows)} samples",
        f"RSS {warm[0]['rss_mib']:.0f} -> {warm[-1]['rss_mib']:.0f} MiB (growth {rss_growth:+.1f} MiB)",
        f"/dev/shm {warm[0]['shm_mib']:.1f} -> {warm[-1]['shm_mib']:.1f} MiB (growth {shm_growth:+.1f} MiB)",
    ]
    for mode, (first, last) in p99.items():
        throughput = warm[-1][f"{mode}_infer_per_s"]
        lines.append(f"{mode}: p99 {first:.2f} -> {last:.2f} ms, last throughput {throughput:.0f}/s")
    lines.append(f"failed inferences (server counters): {failed}; perf_analyzer errors: {errors or 'none'}")
    print("\n".join(lines))
    summary = write_summary(args.output, "soak", lines)
    print(f"wrote {table}, {image} and {summary}")
    bad = rss_growth * 2**20 > RSS_BOUND or shm_growth * 2**20 > SHM_BOUND or failed or errors
    raise SystemExit(1 if bad else 0)


if __name__ == "__main__":
    main()
