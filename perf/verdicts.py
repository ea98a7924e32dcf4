"""The real task's targets, judged on a run's figures: each ratio computed per repetition (the servers measured in
turn, then again) and judged on all of them: met or missed in every repetition, or within noise when they differ.

Text in over HTTP/JSON, batch-1 clients at c=16, the realistic length mix (perf/workload.py).
"""

import statistics

from export.evaluate import interval
from perf.rows import per_rep
from perf.systems import TEXT_IN

TARGET_CONCURRENCY = 16
V0, PIPELINE = "v0_text", "pipeline_text"
# Per profile: what each target asks (ratios are Triton's `feedback_text` over the other system, at c=16).
TARGETS = {
    "accurate": {
        "throughput_vs_v0": 1.0,
        "throughput_vs_pipeline": 1.0,
        "p99_vs_v0": 1.0,
        "p99_vs_pipeline": 1.0,
        "vs_inprocess_limit": 0.95,
        "handwritten_accuracy": 0.85,
        "padding_share": 0.25,
    },
    "fast": {"throughput_vs_v0": 1.5, "throughput_vs_pipeline": 1.0, "padding_share": 0.25},
}
TEXTCNN_GAP = 3  # zero columns after each row in the packed TextCNN (export.members.TextCNN: largest kernel - 1)


def judged(values: list[float], goal: float, at_least: bool) -> tuple[str, str]:
    """('median (min–max)', verdict) over the repetitions."""
    meets = [value >= goal if at_least else value <= goal for value in values]
    verdict = "met" if all(meets) else "**missed**" if not any(meets) else "within noise"
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})", verdict


def padding_shares(mix: dict) -> dict[str, float]:
    """The share of the token positions each member computes that hold no token, on this mix: the packed members
    compute real tokens only; TextCNN also convolves TEXTCNN_GAP zero columns after each comment."""
    return {"transformer": 0.0, "textcnn": TEXTCNN_GAP / (mix["tokens_mean"] + TEXTCNN_GAP)}


def handwritten(accuracy: list[dict]) -> tuple[int, int]:
    """(right, rows) of the ensemble over the short hand-written files (the long ones have their own row)."""
    short = [row for row in accuracy if row["file"].startswith("handwritten")]
    right = sum(round(row["ensemble"] * row["rows"]) for row in short)
    return right, sum(int(row["rows"]) for row in short)


def targets(profile: str, results: list[dict], limit: dict, mix: dict, accuracy: list[dict]) -> list[str]:
    goals = TARGETS.get(profile, {})
    c = float(TARGET_CONCURRENCY)

    def by_rep(system: str) -> dict[float, dict]:
        return per_rep(results, profile=profile, system=system, concurrency=c)

    served = by_rep(TEXT_IN)

    def against(system: str, key: str) -> list[float]:
        other = by_rep(system)
        return [served[rep][key] / other[rep][key] for rep in sorted(served.keys() & other.keys())]

    checks = []  # (what, values, goal, at least)
    for system, name in ((V0, "v0"), (PIPELINE, "pipeline")):
        if f"throughput_vs_{name}" in goals:
            checks.append(
                (f"throughput / {system}", against(system, "throughput"), goals[f"throughput_vs_{name}"], True)
            )
        if f"p99_vs_{name}" in goals:
            checks.append((f"p99 / {system} p99", against(system, "p99_us"), goals[f"p99_vs_{name}"], False))
    if "vs_inprocess_limit" in goals:
        values = [row["throughput"] / limit["rows_per_s"] for row in served.values()]
        checks.append(("throughput / in-process limit", values, goals["vs_inprocess_limit"], True))
    lines = ["| target (`feedback_text`, HTTP/JSON, c=16) | measured: median (min–max) | goal | verdict |"]
    lines.append("|---|---|---|---|")
    for what, values, goal, at_least in checks:
        if not values:
            lines.append(f"| {what} | not measured | {'≥' if at_least else '≤'} {goal} | — |")
            continue
        measured, verdict = judged(values, goal, at_least)
        lines.append(f"| {what} | {measured} | {'≥' if at_least else '≤'} {goal} | {verdict} |")
    if "handwritten_accuracy" in goals:
        right, rows = handwritten(pick_profile(accuracy, profile))
        low, high = interval(right, rows)
        goal = goals["handwritten_accuracy"]
        verdict = "met" if low >= goal else "**missed**" if high < goal else "within noise (its 95% interval)"
        lines.append(
            f"| accuracy on {rows} hand-written comments | {right / rows:.3f} (95% {low:.2f}–{high:.2f}) | "
            f"≥ {goal} | {verdict} |"
        )
    if "padding_share" in goals:
        shares = padding_shares(mix)
        worst = max(shares.values())
        shown = ", ".join(f"{member} {share:.0%}" for member, share in shares.items())
        verdict = "met" if worst <= goals["padding_share"] else "**missed**"
        lines.append(
            f"| padding in the token positions the members compute | {shown} (padded to {64} before: "
            f"{mix['old_padding_share']:.0%}) | ≤ {goals['padding_share']:.0%} | {verdict} |"
        )
    return lines


def pick_profile(rows: list[dict], profile: str) -> list[dict]:
    return [row for row in rows if row["profile"] == profile]
