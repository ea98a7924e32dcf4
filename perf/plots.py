"""One PNG per profile: throughput, p50 and p99 against concurrency, a line per system, the in-process limit
dashed."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on a server
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first

from perf.rows import pick  # noqa: E402
from perf.systems import SYSTEMS  # noqa: E402


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
