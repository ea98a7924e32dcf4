"""report.md from a run's CSVs: every figure is read from what the run measured. The tables are here; the verdicts
(perf/verdicts.py) and the plots (perf/plots.py) have modules of their own.

`python -m perf.report DIR` rebuilds it from DIR's CSVs.
"""

import sys
from pathlib import Path

from perf.plots import plot
from perf.rows import at, medians, ms, pick, read, saturation
from perf.runs import run_line
from perf.systems import SYSTEMS, TEXT_IN
from perf.verdicts import targets

TEXT_SYSTEMS = [system for system in SYSTEMS if system.model in ("feedback_text", "inference")]
IDS_SYSTEMS = [system for system in SYSTEMS if system not in TEXT_SYSTEMS]


def systems_table(
    profile: str, results: list[dict], concurrencies: list[float], limit: dict, systems, model_times: list[dict]
) -> list[str]:
    head = "| system | saturation infer/s | efficiency | " + " | ".join(
        f"c={c:.0f} p50 / p95 / p99 ms" for c in concurrencies
    )
    top_c = f"c={max(concurrencies):.0f}"
    lines = [
        head + f" | server CPU % ({top_c}) | server CPU µs/req ({top_c}) | CPU efficiency | server PSS MiB "
        f"| client CPU % ({top_c}) | rows per member execution ({top_c}) |",
        "|---" * (len(concurrencies) + 9) + "|",
    ]
    for system in systems:
        best = saturation(results, profile, system.name)
        if best is None:
            failed = pick(results, profile=profile, system=system.name)
            if failed:
                lines.append(
                    f"| {system.label} | failed: {failed[0].get('error', '?')} |" + " |" * (len(concurrencies) + 6)
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
        executions = pick(model_times, profile=profile, system=system.name, concurrency=max(concurrencies))
        batches = {row["model"]: row["batch"] for row in executions}
        usage += " | " + (", ".join(f"{m} {batches[m]:.1f}" for m in ("transformer", "textcnn") if m in batches) or "—")
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
        "| batch | callers | comments/s | p50 / p95 / p99 ms per call | CPU µs per comment |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['batch']:.0f} | {row['callers']:.0f} | {row['rows_per_s']:.0f} | "
            f"{ms(row['p50_us'])} / {ms(row['p95_us'])} / {ms(row['p99_us'])} | {row['cpu_us_per_row']:.0f} |"
        )
    return lines


def breakdown_table(profile: str, model_times: list[dict]) -> list[str]:
    rows = pick(model_times, profile=profile, system=TEXT_IN)
    if not rows:
        return []
    lines = [
        f"Triton's own split for `{TEXT_IN}` (average µs per request inside the server; "
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


def mix_table(mix: dict) -> list[str]:
    return [
        "| comments | over 64 tokens | tokens per comment: median / mean / p90 / max | padded to 64 before: "
        "padding / comments cut |",
        "|---|---|---|---|",
        f"| {mix['comments']:.0f} | {mix['long_share']:.0%} | {mix['tokens_median']:.0f} / {mix['tokens_mean']:.1f} / "
        f"{mix['tokens_p90']:.0f} / {mix['tokens_max']:.0f} | {mix['old_padding_share']:.0%} / "
        f"{mix['old_cut_share']:.0%} |",
    ]


def accuracy_table(rows: list[dict]) -> list[str]:
    members = [key for key in rows[0] if key not in ("profile", "file", "rows", "ensemble")] if rows else []
    lines = ["| file | rows | ensemble | " + " | ".join(members) + " |", "|---" * (len(members) + 3) + "|"]
    for row in rows:
        cells = " | ".join(f"{row[member]:.3f}" for member in members)
        lines.append(f"| {row['file']} | {row['rows']:.0f} | {row['ensemble']:.3f} | {cells} |")
    return lines


def write(out: Path, mode: str, gpu: bool = False, settings: str = "") -> Path:
    raw = {name: read(out / f"{name}.csv") for name in ("results", "triton_models", "process_cpu")}
    inprocess, mixes, accuracy = (read(out / f"{name}.csv") for name in ("inprocess", "mix", "accuracy"))
    results = medians(raw["results"], ("profile", "system", "concurrency"))
    model_times = medians(raw["triton_models"], ("profile", "system", "concurrency", "model"))
    process_cpu = medians(raw["process_cpu"], ("profile", "system", "concurrency", "process"))
    repeats = len({row.get("rep") for row in raw["results"]})
    concurrencies = sorted({row["concurrency"] for row in results})
    lines = [
        f"# Benchmark: a comment's text in, its label out ({mode} mode)",
        "",
        f"{run_line(out)} Members (served and in-process) on {'the GPU' if gpu else 'CPU'}."
        + (f" Configs changed for this run: {settings}." if settings else ""),
        "",
        "Every system gets the same batch-1 requests at fixed concurrency: the comments written by hand for the "
        "evaluation plus long ones (perf/workload.py), each at its true length. Text in: Triton's `feedback_text`, a "
        "v0 monolith that tokenizes at the true length (FastAPI under gunicorn, a worker per core) and a batched "
        "pipeline server (mosec, a worker per core), all with the same tokenizer, member files and fuse step, all "
        "over HTTP/JSON and driven by wrk. Token ids in (the second view): Triton's `feedback` and the v0/v1 apps, "
        "driven by the real perf_analyzer 2.51. The clients run on the same cores as the servers and take CPU from "
        "them. Server CPU and PSS are sampled from /proc over each run (every server process). Efficiency = "
        "throughput / the in-process limit (best batch, text in, the same mix). "
        f"Every system was measured {repeats} time(s), the repetitions interleaved (each server in turn, then "
        "again); tables give medians, targets the median and range of the per-repetition ratios.",
        "",
    ]
    for profile in dict.fromkeys(row["profile"] for row in inprocess):
        rows = pick(inprocess, profile=profile)
        floor = rows[0]
        limit = max(rows, key=lambda row: row["rows_per_s"])
        (mix,) = pick(mixes, profile=profile)
        image = plot(out, profile, results, limit, floor)
        lines += [f"## Profile `{profile}`", "", f"![{profile}]({image})", "", "### Targets", ""]
        lines += targets(profile, raw["results"], limit, mix, pick(accuracy, profile=profile))
        lines += [
            "",
            "The members compute real tokens only (export/packing.py); attention pairs each token with the slots "
            "of the longest row in its length group (up to 32, up to 96, longer), which this share does not count.",
            "",
            "### The length mix",
            "",
        ]
        lines += mix_table(mix)
        lines += ["", "### Text in", ""]
        lines += systems_table(profile, results, concurrencies, limit, TEXT_SYSTEMS, model_times)
        lines += ["", "### Token ids in", ""]
        lines += systems_table(profile, results, concurrencies, limit, IDS_SYSTEMS, model_times)
        lines += [
            "",
            "`~`: perf_analyzer's windows did not agree within the mode's stability percentage (a busy machine); the "
            "figure is from a re-run that accepts any 3 windows. CPU efficiency = in-process CPU µs per comment (best "
            "batch) / server CPU µs per request: unlike throughput, it hardly moves when other work shares the "
            "machine.",
            "",
            "### Accuracy (as served, export/evaluate.py)",
            "",
        ]
        lines += accuracy_table(pick(accuracy, profile=profile))
        lines += [""]
        for concurrency in sorted({min(concurrencies), max(concurrencies)}):
            lines += process_table(profile, process_cpu, concurrency) + [""]
        lines += ["", f"### In-process limit (no server, text in; compute limit = batch {limit['batch']:.0f})", ""]
        lines += inprocess_table(rows)
        lines += [""] + breakdown_table(profile, model_times) + [""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


if __name__ == "__main__":
    folder = Path(sys.argv[1])
    write(folder, sys.argv[2] if len(sys.argv) > 2 else "quick")
