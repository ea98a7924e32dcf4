"""report.md and PNG plots from a run's CSVs: every figure is read from what the run measured.

`python -m perf.report DIR` rebuilds them from DIR's CSVs.
"""

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on a server
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first

from perf.systems import SYSTEMS  # noqa: E402
from server.launch import ROOT  # noqa: E402

LABELS = {system.name: system.label for system in SYSTEMS}
SHM = "triton_grpc_shm"  # the served system the targets are set for
TARGET_CONCURRENCY = 16
MEMBERS = ("transformer", "textcnn")  # the ensemble's parallel step
RUN_FILE = "run.json"  # machine, start time, commit and settings, recorded when the run starts
SUMMARY_FILE = "summary.md"  # a scenario's figures (perf/soak.py, perf/overload.py...), as it printed them
MACHINE_CPU_PCT = 100 * (os.cpu_count() or 1)  # what every process together could use
FLOOR = "floor_native"  # Triton serving a trivial native model alone (perf/floors.py)
TARGETS_13 = {  # issue #13's goals, checked against each run
    "cpu_vs_floor": 2.5,  # small: served CPU per request of `feedback` at most this many times the native floor's
    "vs_v0": 3.0,  # small: throughput over HTTP/JSON against v0, one worker per core
    "text_vs_ids": 0.90,  # small: `feedback_text` throughput against `feedback`'s
    "fuse_exec_us": 1036 / 2,  # small: fuse stub CPU per execution, half of perf/latest before native backends
    "efficiency_minilm": 0.97,  # minilm: served throughput against the in-process limit
}
TARGETS = {  # from issue #5, checked against each run
    "efficiency_minilm": 0.90,
    "overhead_small_us": 100.0,
    "vs_v0": 3.0,
    "vs_v1": 5.0,
    "fuse_us": 300.0,
}


def read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path) as file:
        return [{key: _number(value) for key, value in row.items()} for row in csv.DictReader(file)]


def _number(value: str):
    try:
        return float(value)
    except ValueError:
        return value


def machine() -> str:
    with open("/proc/meminfo") as meminfo:
        mem_kib = int(meminfo.readline().split()[1])
    model = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?"
    )
    return (
        f"{os.cpu_count()} cores ({model}), {mem_kib / 2**20:.0f} GiB, {platform.machine()}, "
        f"Python {sys.version.split()[0]}"
    )


def commit() -> str:
    """The commit measured, and "+ uncommitted changes" when the tree differs from it."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + (" + uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def record_run(out: Path, settings: dict) -> None:
    """What the report must say about the run, taken when it starts: the machine, time, commit and settings."""
    run = {"machine": machine(), "started": datetime.now().isoformat(timespec="minutes"), "commit": commit()}
    (out / RUN_FILE).write_text(json.dumps(run | {"settings": settings}, indent=2) + "\n")


def run_line(out: Path) -> str:
    try:
        run = json.loads((out / RUN_FILE).read_text())
    except FileNotFoundError:
        return "Machine, date and commit: not recorded with this run."
    return f"Machine: {run['machine']}; run started {run['started']} at commit {run['commit']}."


def start_scenario(out: Path, args: argparse.Namespace) -> None:
    """A scenario's output folder (perf/soak.py, perf/overload.py...), with the run and its command-line settings."""
    out.mkdir(parents=True, exist_ok=True)
    record_run(out, {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()})


def write_summary(out: Path, title: str, lines: list[str], markdown: bool = False) -> Path:
    """out/summary.md: the title, the run's machine, time and commit, then the figure lines the scenario printed,
    as they were printed (in a text block, which keeps their alignment) or, with `markdown`, as markdown."""
    body = lines if markdown else ["```text", *lines, "```"]
    path = out / SUMMARY_FILE
    path.write_text("\n".join([f"# {title}", "", run_line(out), "", *body]) + "\n")
    return path


def overhead_sentence(overhead: dict) -> str:
    """The ensemble's cost beyond its slowest member, from averages of Triton's statistics.

    "scheduling" is what is left of the ensemble's mean request time after the slowest member's and fuse's: a
    difference of averages over the same requests, not a measurement. It once came out at -763 µs, which no real cost
    can be (the cause was not found: each average is over the same run), so a negative difference is said to be
    unresolvable instead of printed.
    """
    rest = overhead["scheduling_us"]
    rest_text = (
        f"the remaining {rest:.0f} µs (a difference of averages) for scheduling and tensor passing between steps"
        if rest >= 0
        else "scheduling and tensor passing between steps too small to separate from the members' spread"
    )
    return (
        f"`feedback` {overhead['ensemble_us']:.0f} µs per request, slowest member `{overhead['slowest']}` "
        f"{overhead['slowest_us']:.0f} µs: the ensemble adds **{max(overhead['overhead_us'], 0):.0f} µs** "
        f"(fuse {overhead['fuse_us']:.0f} µs, {rest_text})."
    )


def ms(us) -> str:
    return f"{us / 1e3:.2f}" if isinstance(us, float) else "—"


def pick(rows: list[dict], **match) -> list[dict]:
    return [row for row in rows if all(row.get(key) == value for key, value in match.items())]


def medians(rows: list[dict], keys: tuple[str, ...]) -> list[dict]:
    """One row per `keys` combination: each numeric column's median over the interleaved repetitions."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(key) for key in keys), []).append(row)
    merged = []
    for group in groups.values():
        row = {key: value for member in reversed(group) for key, value in member.items()}
        for key in row:
            values = [member[key] for member in group if isinstance(member.get(key), float)]
            if key not in keys and key != "rep" and values:
                row[key] = statistics.median(values)
        merged.append(row)
    return merged


def per_rep(rows: list[dict], **match) -> dict[float, dict]:
    """The matching measured rows, by repetition."""
    return {row.get("rep", 0.0): row for row in pick(rows, **match) if not row.get("error")}


def judged(values: list[float], goal: float, at_least: bool) -> str:
    """'median (min–max)' and the verdict: met or missed in every repetition, or within noise when they differ."""
    meets = [value >= goal if at_least else value <= goal for value in values]
    verdict = "met" if all(meets) else "**missed**" if not any(meets) else "within noise"
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f}) | {verdict}"


def targets_13(profile: str, raw: dict[str, list[dict]], limit: dict) -> list[str]:
    """Issue #13's targets at c=16, each a ratio computed per repetition (servers interleaved) and judged on all."""
    c = float(TARGET_CONCURRENCY)
    results, process_cpu, times = raw["results"], raw["process_cpu"], raw["triton_models"]

    def pairs(a: str, b: str) -> list[tuple[dict, dict]]:
        first, second = (
            per_rep(results, profile=profile, system=a, concurrency=c),
            per_rep(results, profile=profile, system=b, concurrency=c),
        )
        return [(first[rep], second[rep]) for rep in sorted(first.keys() & second.keys())]

    checks = []  # (what, per-repetition values, goal, whether at least the goal meets it)
    if profile == "minilm":
        served = list(per_rep(results, profile=profile, system=SHM, concurrency=c).values())
        goal = TARGETS_13["efficiency_minilm"]
        checks.append(
            (f"`{SHM}` / in-process limit", [r["throughput"] / limit["rows_per_s"] for r in served], goal, True)
        )
        p99 = [a["p99_us"] / b["p99_us"] for a, b in pairs(SHM, "v0_monolith")]
        checks.append((f"p99 `{SHM}` / p99 v0", p99, 1.0, False))
    else:
        cpu = [a["server_cpu_us_per_request"] / b["server_cpu_us_per_request"] for a, b in pairs(SHM, FLOOR)]
        checks.append((f"server CPU per request, `{SHM}` / `{FLOOR}`", cpu, TARGETS_13["cpu_vs_floor"], False))
        http = pairs("triton_http_json", "v0_monolith")
        checks.append(
            (
                "throughput, `triton_http_json` / v0",
                [a["throughput"] / b["throughput"] for a, b in http],
                TARGETS_13["vs_v0"],
                True,
            )
        )
        checks.append(("p99, `triton_http_json` / v0", [a["p99_us"] / b["p99_us"] for a, b in http], 1.0, False))
        text = [a["throughput"] / b["throughput"] for a, b in pairs("triton_text_grpc", "triton_grpc")]
        checks.append(("throughput, `feedback_text` / `feedback` (gRPC)", text, TARGETS_13["text_vs_ids"], True))
        stub = per_rep(process_cpu, profile=profile, system=SHM, concurrency=c, process="stub fuse")
        fuse = per_rep(times, profile=profile, system=SHM, concurrency=c, model="fuse")
        per_execution = [
            stub[rep]["cpu_us_per_request"] * fuse[rep]["batch"] for rep in sorted(stub.keys() & fuse.keys())
        ]
        checks.append(("`fuse` stub CPU µs per execution", per_execution, TARGETS_13["fuse_exec_us"], False))
    lines = [
        f"| target (batch-1 clients, c={TARGET_CONCURRENCY}) | median (min–max over repetitions) | verdict | goal |",
        "|---|---|---|---|",
    ]
    for what, values, goal, at_least in checks:
        shown = judged(values, goal, at_least) if values else "not measured | —"
        lines.append(f"| {what} | {shown} | {'≥' if at_least else '≤'} {goal:g} |")
    return lines + ["", *reach_13(profile, results, limit)]


def reach_13(profile: str, results: list[dict], limit: dict) -> list[str]:
    """How far each target could go, from floors measured in the same repetition as the served systems.

    A floor ensemble (perf/floors.py) has a served graph's steps with nothing to compute: its CPU per request is the
    least any members could cost in that graph. Each bound is computed per repetition, on the CPU that perf_analyzer
    left to the server in the measured system's own run, with the members at their in-process best-batch cost.
    """
    c = float(TARGET_CONCURRENCY)
    by_rep = {name: per_rep(results, profile=profile, system=name, concurrency=c) for name in LABELS}
    cpu_key = "server_cpu_us_per_request"

    def throughput_at(system: dict, cpu_per_request: float) -> float:
        """Requests/s if every CPU that perf_analyzer did not use served requests of this cost."""
        return (MACHINE_CPU_PCT - system["client_cpu_pct"]) / 100 / cpu_per_request * 1e6

    def bound(row: dict) -> dict | None:
        ens, text_ens, native = row.get("floor_ensemble"), row.get("floor_ensemble_text"), row.get(FLOOR)
        if not ens:
            return None
        members = limit["cpu_us_per_row"] + ens[cpu_key]  # best-batch compute plus the graph's own cost
        if profile == "minilm":
            shm = row.get(SHM)
            return {"efficiency": throughput_at(shm, members) / limit["rows_per_s"]} if shm else None
        found = {}
        if native:
            found["cpu_vs_floor"] = ens[cpu_key] / native[cpu_key]
            found["cpu_vs_floor_members"] = members / native[cpu_key]
        if row.get("triton_http_json") and row.get("v0_monolith"):
            found["vs_v0"] = throughput_at(row["triton_http_json"], members) / row["v0_monolith"]["throughput"]
        ids, text = row.get("triton_grpc"), row.get("triton_text_grpc")
        if ids and text and text_ens:
            step = max(text_ens[cpu_key] - ens[cpu_key], 0.0)  # one more Python step, computing nothing
            found["text_vs_ids"] = throughput_at(text, ids[cpu_key] + step) / ids["throughput"]
            # What tokenizing may cost beyond that step for the goal, and what it cost.
            allowed = (
                (MACHINE_CPU_PCT - text["client_cpu_pct"]) / 100 * 1e6 / (TARGETS_13["text_vs_ids"] * ids["throughput"])
            )
            found["text_budget_us"] = allowed - ids[cpu_key] - step
            found["text_spent_us"] = text[cpu_key] - ids[cpu_key] - step
        return found

    reps = sorted({rep for rows in by_rep.values() for rep in rows})
    bounds = [b for b in (bound({name: rows.get(rep) for name, rows in by_rep.items()}) for rep in reps) if b]
    if not bounds:
        return ["Reach: not measured (this run has no floor ensemble)."]
    premises = {
        "cpu_vs_floor": ("server CPU per request / floor", "≥", TARGETS_13["cpu_vs_floor"], False,
                         "`floor_ensemble` / `floor_native`: `feedback`'s graph with members that compute nothing"),
        "cpu_vs_floor_members": ("the same, with these members", "≥", TARGETS_13["cpu_vs_floor"], False,
                                 "these members at their in-process best-batch cost plus `floor_ensemble`"),
        "vs_v0": ("throughput over HTTP/JSON / v0", "≤", TARGETS_13["vs_v0"], True,
                  "members at their in-process best-batch cost plus `floor_ensemble`, on the CPU perf_analyzer left"),
        "text_vs_ids": ("`feedback_text` / `feedback` throughput", "≤", TARGETS_13["text_vs_ids"], True,
                        "`feedback`'s measured cost plus one no-op Python step (`floor_ensemble_text` − "
                        "`floor_ensemble`): a tokenizer that costs nothing"),
        "efficiency": ("served / in-process limit", "≤", TARGETS_13["efficiency_minilm"], True,
                       "members at their in-process best-batch cost plus `floor_ensemble`, on the CPU perf_analyzer "
                       "left"),
    }  # fmt: skip
    lines = [
        "Reach: the best each target could be in this run, from Triton's floors (perf/floors.py) measured beside it.",
        "",
        "| target | bound (median, min–max) | goal | within reach? | the bound assumes |",
        "|---|---|---|---|---|",
    ]
    for key, (what, side, goal, at_least, premise) in premises.items():
        values = [b[key] for b in bounds if key in b]
        if not values:
            continue
        reachable = [value >= goal if at_least else value <= goal for value in values]
        verdict = "yes" if all(reachable) else "**no**" if not any(reachable) else "within noise"
        shown = f"{side} {statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"
        lines.append(f"| {what} | {shown} | {'≥' if at_least else '≤'} {goal:g} | {verdict} | {premise} |")
    budget = [(b["text_budget_us"], b["text_spent_us"]) for b in bounds if "text_budget_us" in b]
    if budget:
        allowed, spent = (statistics.median(values) for values in zip(*budget, strict=True))
        goal = f"For `feedback_text` / `feedback` ≥ {TARGETS_13['text_vs_ids']:g}"
        lines.append("")
        lines.append(
            f"{goal}, the tokenizer step may cost {allowed:.0f} µs of CPU per request more than a no-op Python step; "
            f"it cost {spent:.0f} µs more (medians over the repetitions)."
            if allowed > 0
            else f"{goal}, even a tokenizer step costing no more than a no-op Python step is too much (median)."
        )
    return lines


def at(results: list[dict], profile: str, system: str, concurrency: int) -> dict | None:
    found = [row for row in pick(results, profile=profile, system=system, concurrency=float(concurrency))]
    return found[0] if found and isinstance(found[0].get("throughput"), float) else None


def saturation(results: list[dict], profile: str, system: str) -> float | None:
    measured = [row["throughput"] for row in pick(results, profile=profile, system=system)]
    measured = [value for value in measured if isinstance(value, float)]
    return max(measured) if measured else None


def plot(out: Path, profile: str, results: list[dict], limit: dict, floor: dict) -> str:
    figure, (ax_tput, ax_p50, ax_p99) = plt.subplots(1, 3, figsize=(16, 4.8))
    for system in SYSTEMS:
        rows = sorted(
            (row for row in pick(results, profile=profile, system=system.name) if isinstance(row["throughput"], float)),
            key=lambda row: row["concurrency"],
        )
        if not rows:
            continue
        x = [row["concurrency"] for row in rows]
        ax_tput.plot(x, [row["throughput"] for row in rows], marker="o", label=system.name)
        ax_p50.plot(x, [row["p50_us"] / 1e3 for row in rows], marker="o", label=system.name)
        ax_p99.plot(x, [row["p99_us"] / 1e3 for row in rows], marker="o", label=system.name)
    ax_tput.axhline(limit["rows_per_s"], color="black", linestyle="--", label=f"in-process, batch {limit['batch']:.0f}")
    ax_tput.axhline(floor["rows_per_s"], color="grey", linestyle=":", label="in-process, batch 1")
    for axis, title in (
        (ax_tput, "throughput (inferences/s)"),
        (ax_p50, "p50 latency (ms)"),
        (ax_p99, "p99 latency (ms)"),
    ):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrency (batch-1 clients)")
        axis.set_title(f"{profile}: {title}")
        axis.grid(alpha=0.3)
    ax_p50.set_yscale("log")
    ax_p99.set_yscale("log")
    ax_tput.legend(fontsize=7)
    figure.tight_layout()
    name = f"{profile}.png"
    figure.savefig(out / name, dpi=110)
    plt.close(figure)
    return name


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


def ensemble_overhead(profile: str, model_times: list[dict]) -> dict | None:
    """At concurrency 1: the ensemble minus its slowest member, and the ensemble's time off the critical path."""
    times = {row["model"]: row for row in pick(model_times, profile=profile, system=SHM, concurrency=1.0)}
    if "feedback" not in times or not all(member in times for member in MEMBERS):
        return None
    slowest = max(MEMBERS, key=lambda member: times[member]["request_us"])
    steps = times["fuse"]["request_us"] if "fuse" in times else 0.0
    ensemble = times["feedback"]["request_us"]
    return {
        "ensemble_us": ensemble,
        "slowest": slowest,
        "slowest_us": times[slowest]["request_us"],
        "overhead_us": ensemble - times[slowest]["request_us"],
        "scheduling_us": ensemble - times[slowest]["request_us"] - steps,
        "fuse_us": times.get("fuse", {}).get("request_us"),
    }


def verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def targets_table(profile: str, results: list[dict], limit: dict, overhead: dict | None) -> list[str]:
    lines = ["| target (batch-1 clients, c=16) | measured | target | verdict |", "|---|---|---|---|"]
    served = at(results, profile, SHM, TARGET_CONCURRENCY)
    if served is None:
        return [f"`{SHM}` was not measured at c={TARGET_CONCURRENCY}: no target can be checked."]
    if profile == "minilm":
        efficiency = served["throughput"] / limit["rows_per_s"]
        goal = TARGETS["efficiency_minilm"]
        lines.append(
            f"| served / in-process throughput | {efficiency:.0%} | ≥ {goal:.0%} | {verdict(efficiency >= goal)}"
            + ("" if efficiency >= goal else f", by {goal - efficiency:.0%} points")
            + " |"
        )
    else:
        extra = served["server_cpu_us_per_request"] - limit["cpu_us_per_row"]
        goal = TARGETS["overhead_small_us"]
        lines.append(
            f"| served overhead: server CPU µs/request ({served['server_cpu_us_per_request']:.0f}) minus in-process "
            f"CPU µs/row at its best batch ({limit['cpu_us_per_row']:.0f}) | {extra:.0f} µs | ≤ {goal:.0f} µs | "
            f"{verdict(extra <= goal)}"
            + ("" if extra <= goal else f", by {extra - goal:.0f} µs ({extra / goal:.1f}x)")
            + " |"
        )
    for other, key in (("v0_monolith", "vs_v0"), ("v1_fanout", "vs_v1")):
        theirs = at(results, profile, other, TARGET_CONCURRENCY)
        if theirs is None:
            lines.append(f"| throughput vs {other} | not measured | ≥ {TARGETS[key]:.0f}x | — |")
            continue
        ratio = served["throughput"] / theirs["throughput"]
        lines.append(
            f"| throughput vs {other} ({theirs['throughput']:.0f} infer/s) | {ratio:.1f}x | ≥ {TARGETS[key]:.0f}x | "
            f"{verdict(ratio >= TARGETS[key])}"
            + ("" if ratio >= TARGETS[key] else f", reaches {ratio / TARGETS[key]:.0%} of the target")
            + " |"
        )
        lines.append(
            f"| p99 vs {other} | {ms(served['p99_us'])} ms vs {ms(theirs['p99_us'])} ms | no worse | "
            f"{verdict(served['p99_us'] <= theirs['p99_us'])} |"
        )
    if overhead and overhead["fuse_us"] is not None:
        fuse = overhead["fuse_us"]
        goal = TARGETS["fuse_us"]
        lines.append(
            f"| fuse step at c=1 (average request, Triton statistics) | {fuse:.0f} µs | ≤ {goal:.0f} µs | "
            f"{verdict(fuse <= goal)}" + ("" if fuse <= goal else f", by {fuse - goal:.0f} µs") + " |"
        )
    return lines


def why(profile: str, results: list[dict], limit: dict, floor: dict, process_cpu: list[dict], times: list[dict]):
    """Where the time goes, in this run's own figures: the per-process CPU split and Triton's queue/compute split."""
    served = at(results, profile, SHM, TARGET_CONCURRENCY)
    if served is None or "fuse_p50_us" not in floor:  # older runs did not time the fuse code alone
        return []
    c = float(TARGET_CONCURRENCY)
    by_process = {
        row["process"]: row["cpu_us_per_request"]
        for row in pick(process_cpu, profile=profile, system=SHM, concurrency=c)
    }
    step = {row["model"]: row for row in pick(times, profile=profile, system=SHM, concurrency=c)}
    total, inprocess = served["server_cpu_us_per_request"], limit["cpu_us_per_row"]
    fuse_stub = by_process.get("stub fuse", 0.0)
    batch = {name: step.get(name, {}).get("batch", 1.0) for name in ("fuse", "transformer")}
    lines = ["### Where the time goes", ""]
    if profile != "minilm":  # the profile the overhead target is set for
        server = by_process.get("tritonserver", 0.0)
        rest = total - server - fuse_stub
        lines += [
            f"- **Served overhead, c={TARGET_CONCURRENCY}.** `{SHM}` spends {total:.0f} µs of server CPU per "
            f"request, the in-process path {inprocess:.0f} µs per row (batch {limit['batch']:.0f}). The "
            f"{total - inprocess:.0f} µs more, by process:",
            f"  - tritonserver {server:.0f} µs: gRPC, the ensemble scheduler, and both members in Triton's native "
            f"onnxruntime and pytorch backends, on batches of {batch['transformer']:.1f} rows instead of "
            f"{limit['batch']:.0f} (in-process there is no server);",
            f"  - the `fuse` stub {fuse_stub:.0f} µs per request, {fuse_stub * batch['fuse']:.0f} µs per "
            f"execution ({batch['fuse']:.1f} requests each), where the fuse code costs {floor['fuse_p50_us']:.0f} µs "
            "a call in-process" + (f"; other stubs {rest:.0f} µs." if rest >= 1 else "."),
            f"  - So the one Python-backend hand-off left on the path costs more CPU than the whole "
            f"{TARGETS['overhead_small_us']:.0f} µs target.",
        ]
    fuse = {row["model"]: row for row in pick(times, profile=profile, system=SHM, concurrency=1.0)}.get("fuse")
    if fuse:
        lines.append(
            f"- **Fuse step, c=1.** Triton counts {fuse['request_us']:.0f} µs per request: {fuse['queue_us']:.0f} µs "
            f"in its scheduler's queue and {fuse['compute_us']:.0f} µs compute, of which the fuse code itself is "
            f"{floor['fuse_p50_us']:.0f} µs (in-process, batch 1). The other "
            f"{fuse['compute_us'] - floor['fuse_p50_us']:.0f} µs is the Python backend: tensors through shared "
            "memory, waking the stub and the server, and the stub reading requests and building responses."
        )
    apps = {name: at(results, profile, name, TARGET_CONCURRENCY) for name in ("v0_monolith", "v1_fanout")}
    if apps["v0_monolith"]:
        lines.append(against_v0(served, apps["v0_monolith"], limit, by_process, step))
    for name, key in (("v0_monolith", "vs_v0"), ("v1_fanout", "vs_v1")):
        if apps[name] and limit["rows_per_s"] / apps[name]["throughput"] < TARGETS[key]:
            lines.append(
                f"- **{TARGETS[key]:.0f}x {name} is out of reach by construction:** it serves "
                f"{apps[name]['throughput']:.0f} infer/s, and even the in-process limit is only "
                f"{limit['rows_per_s'] / apps[name]['throughput']:.1f}x that."
            )
    if profile == "minilm":
        idle = MACHINE_CPU_PCT - served["server_cpu_pct"] - served["client_cpu_pct"]
        lines.append(
            f"- **Against the in-process limit.** tritonserver, where the members run, spends "
            f"{by_process.get('tritonserver', 0.0):.0f} of {total:.0f} µs per request (in-process: {inprocess:.0f} "
            f"µs per row). At c={TARGET_CONCURRENCY} the server processes used "
            f"{served['server_cpu_pct']:.0f}% of {MACHINE_CPU_PCT}% CPU, perf_analyzer "
            f"{served['client_cpu_pct']:.0f}%, and {idle:.0f}% went unused."
        )
    lines += p99_worse(served, apps, at(results, profile, f"{SHM}_no_batching", TARGET_CONCURRENCY), step)
    return lines + [""]


def p99_worse(served: dict, apps: dict, no_batching: dict | None, step: dict) -> list[str]:
    """Where Triton's p99 is worse than a web app's: the member batches a late request waits behind."""
    worse = [name for name, app in apps.items() if app and served["p99_us"] > app["p99_us"]]
    if not worse or "transformer" not in step:
        return []
    text = (
        f"- **p99, c={TARGET_CONCURRENCY}.** `{SHM}` {ms(served['p99_us'])} ms against "
        + ", ".join(f"{name} {ms(apps[name]['p99_us'])} ms" for name in worse)
        + f". Each `transformer` execution took {step['transformer']['compute_us'] / 1e3:.0f} ms on batches of "
        f"{step['transformer']['batch']:.1f} rows; a request arriving just after one started waits for it and then "
        "for its own."
    )
    if no_batching:
        text += (
            f" With dynamic batching off the same server had p99 {ms(no_batching['p99_us'])} ms at "
            f"{no_batching['throughput']:.1f} infer/s (this run: {served['throughput']:.1f})."
        )
    return [text]


def against_v0(served: dict, v0: dict, limit: dict, by_process: dict, step: dict) -> str:
    """Whether the cores or the busiest single-instance step set Triton's pace against v0."""
    total = served["server_cpu_us_per_request"]
    text = (
        f"- **Against v0.** v0 serves {v0['throughput']:.0f} infer/s at c={TARGET_CONCURRENCY}, and the in-process "
        f"limit is {limit['rows_per_s'] / v0['throughput']:.1f}x that on this machine. Per request v0 spends "
        f"{v0['server_cpu_us_per_request']:.0f} µs of server CPU, Triton {total:.0f} µs "
        f"({v0['server_cpu_us_per_request'] / total:.1f}x less). perf_analyzer itself took "
        f"{served['client_cpu_pct']:.0f}% CPU driving `{SHM}` and {v0['client_cpu_pct']:.0f}% driving v0."
    )
    used = served["server_cpu_pct"] + served["client_cpu_pct"]
    # Triton adds a batch's duration to each of its requests: executions/s x compute µs = the time a step was busy.
    busy = {m: served["throughput"] / step[m]["batch"] * step[m]["compute_us"] / 1e6 for m in MEMBERS if m in step}
    if used >= 0.85 * MACHINE_CPU_PCT or not busy:
        full = (
            f" Triton and perf_analyzer used {used:.0f}% of {MACHINE_CPU_PCT}% CPU: throughput follows CPU per request."
        )
        return text + full
    name = max(busy, key=busy.get)
    batch, execution_us = step[name]["batch"], step[name]["compute_us"]
    return text + (
        f" The cores were not full ({used:.0f}% of {MACHINE_CPU_PCT}% CPU): `{name}` was executing {busy[name]:.0%} of "
        f"the run (summed over its instances) on batches of {batch:.1f} rows, each execution taking "
        f"{execution_us / 1e3:.1f} ms. That step's wall time, spent waiting for a core and for its queue, sets the "
        "pace, not the CPU cost."
    )


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
