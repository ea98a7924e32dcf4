"""The issues' targets, judged on a run's figures: each ratio per repetition, met / missed / within noise, and how far
each could go given Triton's floors measured in the same run."""

import os
import statistics

from perf.rows import at, ms, per_rep
from perf.systems import SYSTEMS

LABELS = {system.name: system.label for system in SYSTEMS}
SHM = "triton_grpc_shm"  # the served system the targets are set for
TARGET_CONCURRENCY = 16
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
