"""The README's Measured section, built from a committed bench run's CSVs (perf/latest/), so that every figure the
README quotes is one that run measured: `python -m perf.readme` prints it; tests/test_readme.py checks that the README
holds exactly this text.
"""

import json
import sys
from pathlib import Path

from export.evaluate import interval
from perf.rows import medians, pick, read
from perf.systems import SYSTEMS, TEXT_IN
from perf.verdicts import PIPELINE, TARGET_CONCURRENCY, V0, handwritten

LATEST = Path(__file__).parent / "latest"
SHOWN = (TEXT_IN, V0, PIPELINE)  # the real task's peers: text in over HTTP/JSON
LABELS = {system.name: system.label for system in SYSTEMS}


def measured(run: Path = LATEST) -> str:
    info = json.loads((run / "run.json").read_text())
    results = medians(read(run / "results.csv"), ("profile", "system", "concurrency"))
    inprocess, accuracy = read(run / "inprocess.csv"), read(run / "accuracy.csv")
    mix = read(run / "mix.csv")[0]
    lines = [
        f"`make bench` on {info['started'][:10]} (commit {info['commit']}), {info['machine']}, no GPU. "
        f"The user's task: a comment's text in, its label out, batch-1 clients at concurrency {TARGET_CONCURRENCY} "
        f"over HTTP/JSON, on a mix of {mix['comments']:.0f} comments (median {mix['tokens_median']:.0f} tokens, "
        f"{mix['long_share']:.0%} over 64, up to {mix['tokens_max']:.0f}); medians of "
        f"{info['settings']['repeats']} interleaved repetitions ([perf/latest/report.md](perf/latest/report.md), "
        "[docs/performance.md](docs/performance.md)):",
        "",
        "| profile | system | comments/s | p99 ms | server CPU ms per comment |",
        "|---|---|---|---|---|",
    ]
    for profile in info["settings"]["profiles"]:
        for name in SHOWN:
            (row,) = pick(results, profile=profile, system=name, concurrency=float(TARGET_CONCURRENCY))
            lines.append(
                f"| {profile} | {LABELS[name]} | {row['throughput']:,.0f} | {row['p99_us'] / 1e3:,.0f} | "
                f"{row['server_cpu_us_per_request'] / 1e3:.1f} |"
            )
        limit = max(pick(inprocess, profile=profile), key=lambda row: row["rows_per_s"])
        lines.append(
            f"| {profile} | in-process limit: no server, a caller per core, batches of {limit['batch']:.0f} | "
            f"{limit['rows_per_s']:,.0f} | — | {limit['cpu_us_per_row'] / 1e3:.1f} |"
        )
    scores = []
    for profile in info["settings"]["profiles"]:
        right, rows = handwritten(pick(accuracy, profile=profile))
        low, high = interval(right, rows)
        scores.append(f"{profile} {right / rows:.2f} (95% {low:.2f}–{high:.2f})")
    lines += [
        "",
        f"Accuracy as served on the {rows} comments written by hand: {', '.join(scores)}. Every comment is read at its "
        f"true length: padded to 64 tokens as before, {mix['old_padding_share']:.0%} of the tokens the members "
        f"computed on this mix were padding and {mix['old_cut_share']:.0%} of the comments were cut.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(measured(Path(sys.argv[1]) if len(sys.argv) > 1 else LATEST))
