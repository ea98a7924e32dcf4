"""report.md from a run's CSVs: every figure is read from what the run measured. The tables are here; the verdicts
(perf/verdicts.py), the narrative (perf/narrative.py) and the plots (perf/plots.py) have modules of their own.

`python -m perf.report DIR` rebuilds it from DIR's CSVs.
"""

import sys
from pathlib import Path

from perf.narrative import ensemble_overhead, overhead_sentence, why
from perf.plots import plot
from perf.rows import at, medians, ms, pick, read, saturation
from perf.runs import run_line
from perf.systems import SYSTEMS
from perf.verdicts import SHM, targets_13, targets_table


def systems_table(profile: str, results: list[dict], concurrencies: list[float], limit: dict) -> list[str]:
    head = "| system | saturation infer/s | efficiency | " + " | ".join(
        f"c={c:.0f} p50 / p95 / p99 ms" for c in concurrencies
    )
    top_c = f"c={max(concurrencies):.0f}"
    lines = [
        head + f" | server CPU % ({top_c}) | server CPU µs/req ({top_c}) | CPU efficiency | server PSS MiB "
        f"| perf_analyzer CPU % ({top_c}) |",
        "|---" * (len(concurrencies) + 8) + "|",
    ]
    for system in SYSTEMS:
        best = saturation(results, profile, system.name)
        if best is None:
            failed = pick(results, profile=profile, system=system.name)
            if failed:
                lines.append(
                    f"| {system.label} | failed: {failed[0].get('error', '?')} |" + " |" * (len(concurrencies) + 5)
                )
            continue
        cells = []
        for c in concurrencies:
            row = at(results, profile, system.name, int(c))
            cells.append(f"{ms(row['p50_us'])} / {ms(row['p95_us'])} / {ms(row['p99_us'])}{mark(row)}" if row else "—")
        top = at(results, profile, system.name, int(max(concurrencies)))
        usage = (
            f"{top['server_cpu_pct']:.0f} | {top['server_cpu_us_per_request']:.0f} | "
            f"{limit['cpu_us_per_row'] / top['server_cpu_us_per_request']:.0%} | {top['server_memory_mib']:.0f} | "
            f"{top.get('client_cpu_pct', float('nan')):.0f}"
            if top
            else "— | — | — | — | —"
        )
        lines.append(
            f"| {system.label} | {best:.0f} | {best / limit['rows_per_s']:.0%} | " + " | ".join(cells) + f" | {usage} |"
        )
    return lines


def mark(row: dict) -> str:
    """A measurement whose windows never agreed within the mode's stability percentage (see the footnote)."""
    return " ~" if row.get("stable") == "False" else ""


def process_table(profile: str, process_cpu: list[dict], concurrency: float) -> list[str]:
    """Server CPU µs per request by process: what each Python-backend stub, tritonserver or web app costs."""
    lines = [f"| system (c={concurrency:.0f}) | server CPU µs per request, by process |", "|---|---|"]
    for system in SYSTEMS:
        rows = pick(process_cpu, profile=profile, system=system.name, concurrency=concurrency)
        if rows:
            parts = ", ".join(f"{row['process']} {row['cpu_us_per_request']:.0f}" for row in rows)
            lines.append(f"| {system.label} | {parts} |")
    return lines


def inprocess_table(rows: list[dict]) -> list[str]:
    lines = [
        "| batch | callers | rows/s | p50 / p95 / p99 ms per call | CPU µs per row |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['batch']:.0f} | {row['callers']:.0f} | {row['rows_per_s']:.0f} | "
            f"{ms(row['p50_us'])} / {ms(row['p95_us'])} / {ms(row['p99_us'])} | {row['cpu_us_per_row']:.0f} |"
        )
    return lines


def breakdown_table(profile: str, model_times: list[dict]) -> list[str]:
    rows = pick(model_times, profile=profile, system=SHM)
    if not rows:
        return []
    lines = [
        f"Triton's own split for `{SHM}` (average µs per request inside the server; "
        "batch = average rows per execution):",
        "",
        "| concurrency | model | requests | request µs | queue µs | compute µs | batch |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in sorted(rows, key=lambda r: (r["concurrency"], r["model"])):
        lines.append(
            f"| {row['concurrency']:.0f} | {row['model']} | {row['requests']:.0f} | {row['request_us']:.0f} | "
            f"{row['queue_us']:.0f} | {row['compute_us']:.0f} | {row['batch']:.1f} |"
        )
    return lines


def write(out: Path, mode: str, gpu: bool = False, settings: str = "") -> Path:
    raw = {name: read(out / f"{name}.csv") for name in ("results", "triton_models", "process_cpu")}
    inprocess = read(out / "inprocess.csv")
    # Everything but issue #13's targets reads the median of the repetitions.
    results = medians(raw["results"], ("profile", "system", "concurrency"))
    model_times = medians(raw["triton_models"], ("profile", "system", "concurrency", "model"))
    process_cpu = medians(raw["process_cpu"], ("profile", "system", "concurrency", "process"))
    repeats = len({row.get("rep") for row in raw["results"]})
    concurrencies = sorted({row["concurrency"] for row in results})
    lines = [
        f"# Benchmark: the Triton ensemble against the in-process limit, a v0 monolith and a v1 fan-out ({mode} mode)",
        "",
        f"{run_line(out)} Members (served and in-process) on {'the GPU' if gpu else 'CPU'}."
        + (f" Configs changed for this run: {settings}." if settings else ""),
        "",
        "Every served system gets the same batch-1 requests (64 held-out corpus comments, tokenized by the "
        "repository's tokenizer) from the real perf_analyzer 2.51 at fixed concurrency. Triton is measured over gRPC "
        "(binary tensors, with and without system shared memory) and over HTTP/JSON; the v0 and v1 apps speak the "
        "same KServe v2 protocol over HTTP/JSON, so `Triton feedback, HTTP/JSON` is the like-for-like row. "
        "perf_analyzer runs on the same cores as the servers and takes CPU from them. Server CPU and PSS are sampled "
        "from /proc over each run (all server processes: tritonserver and its stubs, every gunicorn process). "
        "Efficiency = saturation throughput / the in-process limit (best batch). "
        f"Every system was measured {repeats} time(s), the repetitions interleaved (each server in turn, then again); "
        "tables give medians.",
        "",
    ]
    for profile in dict.fromkeys(row["profile"] for row in inprocess):
        rows = pick(inprocess, profile=profile)
        floor = rows[0]
        limit = max(rows, key=lambda row: row["rows_per_s"])
        overhead = ensemble_overhead(profile, model_times)
        image = plot(out, profile, results, limit, floor)
        lines += [f"## Profile `{profile}`", "", f"![{profile}]({image})", "", "### Targets (issue #13)", ""]
        lines += targets_13(profile, raw, limit)
        lines += ["", "### Targets (issue #5)", ""]
        lines += targets_table(profile, results, limit, overhead)
        lines += [""] + why(profile, results, limit, floor, pick(process_cpu, profile=profile), model_times)
        lines += ["", "### Systems", ""]
        lines += systems_table(profile, results, concurrencies, limit)
        lines += [
            "",
            "`~`: perf_analyzer's windows did not agree within the mode's stability percentage (a busy machine); the "
            "figure is from a re-run that accepts any 3 windows. CPU efficiency = in-process CPU µs per row (best "
            "batch) / server CPU µs per request: unlike throughput, it hardly moves when other work shares the "
            "machine.",
            "",
        ]
        for concurrency in sorted({min(concurrencies), max(concurrencies)}):
            lines += process_table(profile, process_cpu, concurrency) + [""]
        lines += ["", f"### In-process limit (no server; compute limit = batch {limit['batch']:.0f})", ""]
        lines += inprocess_table(rows)
        if overhead:
            lines += [
                "",
                "### Ensemble overhead at c=1 (Triton statistics, averages)",
                "",
                overhead_sentence(overhead),
            ]
        lines += [""] + breakdown_table(profile, model_times) + [""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


if __name__ == "__main__":
    folder = Path(sys.argv[1])
    write(folder, sys.argv[2] if len(sys.argv) > 2 else "quick")
