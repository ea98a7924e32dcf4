"""`python -m perf` (what `make bench` runs): every system side by side, on the same models and requests.

python -m perf [--mode quick|full|tiny] [--profile accurate] [--profile fast] [--gpu] [--out DIR]
               [--systems NAME,...] [--queue-delay-us N] [--instances N] [--threads N]

Writes DIR (default perf/results/<timestamp>/): results.csv (one row per system and concurrency), inprocess.csv,
triton_models.csv (Triton's per-model queue/compute split, rows per execution), mix.csv (the length mix),
accuracy.csv, raw/ (every perf_analyzer and wrk log), report.md and the PNG plots. Progress goes to stdout, one line
per measurement.
"""

import argparse
import csv
import dataclasses
import os
import resource
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from export import evaluate
from export.members import DEFAULT_PROFILE
from harness import triton_stats
from perf import (
    floors,
    inprocess_limit,
    perf_analyzer,
    report,
    repositories,
    runs,
    servers,
    workload,
    wrk,
)
from perf.systems import SYSTEMS, System
from python_backend.inprocess import RepositoryFuse
from server import ROOT


@dataclass(frozen=True)
class Mode:
    concurrencies: tuple[int, ...]
    windows: perf_analyzer.Windows
    inprocess_seconds: float
    batch_sizes: tuple[int, ...]
    wrk_seconds: float  # each wrk measurement, after as long again of warm-up
    # Where one request takes so long that a time window would hold fewer than ~50 of them (the accurate profile), a
    # window lasts until this many requests completed instead: with c=16 and 1 s per request, a 1 s window can end
    # with no request completed at all.
    slow_requests: int = 0
    warmup: bool = True  # the members' model_warmup at load: off where only the harness itself is checked
    # Every system is measured this many times, the repetitions interleaved (all servers once, then again), so that
    # machine noise hits each alike; the report gives medians and the spread of each ratio.
    repeats: int = 3


MODES = {
    # Loose stability in quick mode: on a busy 2-core machine, 3 windows within 10% may never come.
    "quick": Mode((1, 4, 16), perf_analyzer.Windows(800, 50, 4), 3.0, (8, 16, 32), 8.0, slow_requests=12),
    "full": Mode(
        (1, 2, 4, 8, 16, 32),
        perf_analyzer.Windows(3000, 15, 10),
        5.0,
        (1, 4, 8, 16, 32, 64),
        20.0,
        slow_requests=128,
    ),
    # End-to-end check of the harness (tests): every system once, as short as perf_analyzer allows.
    "tiny": Mode((1,), perf_analyzer.Windows(100, 1000, 3, requests=10), 0.2, (4,), 1.0, warmup=False, repeats=1),
}


class Bench:
    def __init__(self, out: Path, mode: Mode, gpu: bool, copies: Path, overrides: repositories.Overrides):
        self.out, self.mode, self.gpu, self.overrides = out, mode, gpu, overrides
        self.copies = copies  # this run's generated repository variants
        self.results: list[dict] = []
        self.inprocess: list[dict] = []
        self.model_times: list[dict] = []
        self.process_cpu: list[dict] = []
        self.mix: list[dict] = []
        self.accuracy: list[dict] = []
        self.started = time.monotonic()
        self.done, self.planned = 0, 0
        self.systems = SYSTEMS

    def progress(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:6.0f} s] {message}", flush=True)

    def profile(self, profile: str) -> None:
        repository = repositories.for_profile(profile)
        raw = self.out / "raw" / profile
        load = workload.prepare(repository, raw)
        self.mix.append({"profile": profile, **load.describe()})
        for path in evaluate.FILES:
            scores = evaluate.accuracies(repository, path)
            self.accuracy.append({"profile": profile, "file": path.name, "rows": len(evaluate.read(path)[0]), **scores})
        self.progress(f"{profile}: in-process limit ({self.mode.inprocess_seconds:g} s per batch size)")
        callers = os.cpu_count() or 1
        measured = inprocess_limit.measure(
            repository, load.texts, self.mode.batch_sizes, callers, self.mode.inprocess_seconds, self.gpu
        )
        for result in measured:
            self.inprocess.append({"profile": profile, **asdict(result)})
            self.progress(f"  batch {result.batch:>2} x {result.callers} callers: {result.rows_per_s:8.0f} comments/s")

        options = {"gpu": self.gpu, "warmup": self.mode.warmup, "overrides": self.overrides}
        windows = self.mode.windows
        if self.mode.slow_requests and measured[0].p50_us * 50 > windows.milliseconds * 1e3:
            windows = dataclasses.replace(windows, requests=self.mode.slow_requests)
            self.progress(f"{profile}: slow requests, so each window lasts {windows.requests} requests")
        served = repositories.variant(repository, self.copies / f"{profile}_served", **options)
        no_batching = repositories.variant(
            repository, self.copies / f"{profile}_no_batching", dynamic_batching=False, **options
        )
        floor_models = floors.write(self.copies / f"{profile}_floors")
        members = RepositoryFuse(repository).member_names
        starters = {
            "triton": lambda log: servers.triton(served, log),
            "triton_no_batching": lambda log: servers.triton(no_batching, log),
            "floors": lambda log: servers.triton(floor_models, log),
            "v0": lambda log: servers.v0_monolith(repository, log),
            "pipeline": lambda log: servers.pipeline(repository, log),
            "v1": lambda log: servers.v1_fanout(repository, members, log),
        }
        for rep in range(self.mode.repeats):
            for server, start in starters.items():
                systems = [system for system in self.systems if system.server == server]
                if not systems:
                    continue
                self.progress(f"{profile}: starting {server} (repetition {rep + 1} of {self.mode.repeats})")
                with start(raw / f"{server}.log") as running:
                    for system in systems:
                        for concurrency in self.mode.concurrencies:
                            self.measure(profile, system, running, concurrency, load, raw, windows, rep)

    def measure(self, profile, system: System, running, concurrency, load: workload.Workload, raw: Path, windows, rep):
        name = f"{system.name}_c{concurrency}_r{rep}"
        url = running.grpc_url if system.protocol == "grpc" else running.http_url
        if system.driver == "wrk":
            requests = [system.request(text) for text in load.texts]
            lua = wrk.script(requests[0][0], [body for _, body in requests], raw / f"{system.name}.lua")
            # A warm-up run first: wrk has no warm-up of its own, and the first seconds pay for lazy allocations.
            wrk.measure(url, lua, concurrency, self.mode.wrk_seconds, raw / f"{name}.warmup.log")
        else:
            inputs = load.text_file if system.model == "feedback_text" else load.ids_file
            argv = perf_analyzer.command(
                system.model,
                url,
                system.protocol,
                perf_analyzer.concurrency(concurrency),
                inputs,
                windows,
                raw / f"{name}.csv",
                {},  # every entry of the input file has its own shape
                shm=system.shm,
            )
        triton = system.server.startswith("triton")
        before = triton_stats.snapshot(running.http_url) if triton else None
        cpu, client, wall = running.cpu_seconds(), children_cpu_seconds(), time.monotonic()
        row = {"profile": profile, "system": system.name, "concurrency": concurrency, "rep": rep}
        self.done += 1
        try:
            if system.driver == "wrk":
                done = wrk.measure(url, lua, concurrency, self.mode.wrk_seconds, raw / f"{name}.log")
                if done.errors:
                    raise wrk.Failed(f"{done.errors} of {done.requests} requests failed")
                measured = {"Inferences/Second": done.throughput} | {
                    f"p{p} latency": getattr(done, f"p{p}_us") for p in (50, 95, 99)
                }
                stable = True
            else:
                measured, stable = perf_analyzer.measure(argv, raw / f"{name}.log")
        except (perf_analyzer.Failed, wrk.Failed) as error:
            self.results.append({**row, "error": str(error)})
            self.progress(f"  {self.done}/{self.planned} {profile} {system.name} c={concurrency}: FAILED, {error}")
            return
        after, client, wall = running.cpu_seconds(), children_cpu_seconds() - client, time.monotonic() - wall
        by_role = {process: spent - cpu.get(process, 0.0) for process, spent in after.items()}
        throughput = measured["Inferences/Second"]
        row |= {
            "stable": stable,  # False: perf_analyzer's windows never agreed within the mode's stability percentage
            "throughput": throughput,
            **{f"p{p}_us": measured[f"p{p} latency"] for p in (50, 95, 99)},
            "server_cpu_pct": 100 * sum(by_role.values()) / wall,
            "server_cpu_us_per_request": sum(by_role.values()) / wall / throughput * 1e6,
            "server_memory_mib": running.memory_mib(),
            "client_cpu_pct": 100 * client / wall,  # perf_analyzer's or wrk's, on the same cores
        }
        self.results.append(row)
        for process, spent in sorted(by_role.items()):
            self.process_cpu.append(
                {"profile": profile, "system": system.name, "concurrency": concurrency, "rep": rep, "process": process}
                | {"cpu_us_per_request": spent / wall / throughput * 1e6}
            )
        if before is not None:
            for model, times in triton_stats.difference(triton_stats.snapshot(running.http_url), before).items():
                self.model_times.append(
                    {"profile": profile, "system": system.name, "concurrency": concurrency, "rep": rep, "model": model}
                    | asdict(times)
                )
        self.progress(
            f"  {self.done}/{self.planned} {profile} {system.name} c={concurrency}: {throughput:8.1f} infer/s, "
            f"p50 {row['p50_us'] / 1e3:7.2f} ms, p99 {row['p99_us'] / 1e3:7.2f} ms, "
            f"server CPU {row['server_cpu_pct']:.0f}%, perf_analyzer {row['client_cpu_pct']:.0f}%"
            + ("" if stable else " (unstable windows)")
        )

    def write(self) -> None:
        for name, rows in (
            ("results", self.results),
            ("inprocess", self.inprocess),
            ("triton_models", self.model_times),
            ("process_cpu", self.process_cpu),
            ("mix", self.mix),
            ("accuracy", self.accuracy),
        ):
            columns = list(dict.fromkeys(key for row in rows for key in row))
            with open(self.out / f"{name}.csv", "w", newline="") as file:
                writer = csv.DictWriter(file, columns)
                writer.writeheader()
                writer.writerows(rows)


def children_cpu_seconds() -> float:
    """CPU time of this process's finished children: the perf_analyzer runs (servers are still running)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m perf", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=sorted(MODES), default="quick")
    parser.add_argument("--profile", action="append", choices=sorted(repositories.PROFILES))
    parser.add_argument("--gpu", action="store_true", help="members on KIND_GPU instances (see perf/gpu.sh)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--systems", help="comma-separated system names to measure (default: all)")
    parser.add_argument("--queue-delay-us", type=int, help="try another max_queue_delay_microseconds (every model)")
    parser.add_argument("--instances", type=int, help="try another instance count for the members")
    parser.add_argument("--threads", type=int, help="try another intra-op thread count for the members")
    parser.add_argument("--repeats", type=int, help="interleaved repetitions of every system (default: the mode's)")
    args = parser.parse_args()
    profiles = args.profile or [DEFAULT_PROFILE]
    out = args.out or ROOT / "perf" / "results" / datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    mode = MODES[args.mode]
    if args.repeats:
        mode = dataclasses.replace(mode, repeats=args.repeats)
    repositories.BUILD.mkdir(parents=True, exist_ok=True)
    copies = Path(tempfile.mkdtemp(prefix="run-", dir=repositories.BUILD))  # runs side by side do not share copies
    overrides = repositories.Overrides(args.queue_delay_us, args.instances, args.threads)
    bench = Bench(out, mode, args.gpu, copies, overrides)
    if args.systems:
        wanted = args.systems.split(",")
        unknown = set(wanted) - {system.name for system in SYSTEMS}
        if unknown:
            parser.error(f"unknown systems {sorted(unknown)}; known: {[system.name for system in SYSTEMS]}")
        bench.systems = tuple(system for system in SYSTEMS if system.name in wanted)
    runs.record_run(out, {"mode": args.mode, "profiles": profiles, "systems": [s.name for s in bench.systems],
                             "repeats": mode.repeats, "gpu": args.gpu} | asdict(overrides))  # fmt: skip
    bench.planned = len(profiles) * len(bench.systems) * len(mode.concurrencies) * mode.repeats
    if any(system.driver == "wrk" for system in bench.systems):
        wrk.ensure()
    bench.progress(f"bench ({args.mode}, profiles {', '.join(profiles)}) into {out}")
    try:
        for profile in profiles:
            bench.profile(profile)
    finally:
        bench.write()  # whatever was measured, even when a later step failed
        shutil.rmtree(copies, ignore_errors=True)
    changed = ", ".join(f"{key} = {value}" for key, value in asdict(overrides).items() if value is not None)
    report.write(out, args.mode, args.gpu, changed)
    bench.progress(f"report: {out / 'report.md'}")


if __name__ == "__main__":
    main()
