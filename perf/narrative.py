"""Where the time went, in sentences conditioned on the run's own figures: the ensemble's overhead, the per-process
CPU split, Triton's queue/compute split, the comparison with v0."""

from perf.rows import at, ms, pick
from perf.verdicts import MACHINE_CPU_PCT, SHM, TARGET_CONCURRENCY, TARGETS

MEMBERS = ("transformer", "textcnn")  # the ensemble's parallel step


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
