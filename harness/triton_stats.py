"""What Triton counts itself: its statistics API (where the time goes) and its Prometheus metrics (requests).

The statistics API gives cumulative sums per model, not percentiles: a difference of two snapshots taken around one
perf_analyzer run gives each model's average per request for that run.
"""

import json
import re
import urllib.request
from collections import Counter
from dataclasses import dataclass

Snapshot = dict[str, dict[str, int]]
PARTS = ("success", "queue", "compute_input", "compute_infer", "compute_output")


def snapshot(http_url: str) -> Snapshot:
    with urllib.request.urlopen(f"http://{http_url}/v2/models/stats", timeout=10) as answer:
        stats = json.load(answer)["model_stats"]
    taken = {}
    for model in stats:
        counters = {f"{part}_ns": int(model["inference_stats"][part]["ns"]) for part in PARTS}
        counters["requests"] = int(model["inference_stats"]["success"]["count"])
        counters["executions"] = int(model["execution_count"])
        counters["inferences"] = int(model["inference_count"])
        taken[model["name"]] = counters
    return taken


@dataclass(frozen=True)
class ModelTimes:
    """Averages per request over one run, in µs; batch is the average batch the model executed."""

    requests: int
    request_us: float  # arrival to response inside the server
    queue_us: float
    compute_us: float  # input + infer + output
    batch: float


def difference(after: Snapshot, before: Snapshot) -> dict[str, ModelTimes]:
    times = {}
    for name, end in after.items():
        start = before.get(name, dict.fromkeys(end, 0))
        requests = end["requests"] - start["requests"]
        if requests <= 0:
            continue

        def per_request(key: str) -> float:
            return (end[key] - start[key]) / requests / 1e3  # noqa: B023 - used at once, inside this iteration

        compute = sum(per_request(f"compute_{part}_ns") for part in ("input", "infer", "output"))
        executions = max(end["executions"] - start["executions"], 1)
        batch = (end["inferences"] - start["inferences"]) / executions
        times[name] = ModelTimes(requests, per_request("success_ns"), per_request("queue_ns"), compute, batch)
    return times


def metrics_text(metrics_port: int) -> str:
    """The server's /metrics page (Prometheus text format)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as answer:
        return answer.read().decode()


def request_counts(metrics_port: int, outcome: str, by: tuple[str, ...] = ("model",)) -> Counter:
    """nv_inference_request_<outcome> ("success" or "failure") per model, summed over its other labels; ensemble
    requests count under the ensemble and under each member. `by=("model", "reason")` keeps a failure's reason apart
    (REJECTED, CANCELED, BACKEND or OTHER), keyed "model/REASON"."""
    found = Counter()
    for line in metrics_text(metrics_port).splitlines():
        if line.startswith(f"nv_inference_request_{outcome}{{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
            found["/".join(labels[name] for name in by)] += int(float(line.rsplit(" ", 1)[1]))
    return found


def heads_gauges(metrics_port: int) -> dict[str, float]:
    found = {}
    for line in metrics_text(metrics_port).splitlines():
        if line.startswith("feedback_tenant_heads{"):
            found[line.split('what="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
    return found
