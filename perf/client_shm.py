"""Shared-memory tensors against plain gRPC, through the client library, from 1 row to a 64 x 512 batch.

python -m perf.client_shm [--seconds 3] [--output perf/results/client_shm]   (make bench-client)

Starts its own tritonserver on free ports, then for each batch shape calls the `feedback` ensemble (token ids in,
probabilities out) with FeedbackClient(shm="none") and FeedbackClient(shm="system") in turn, one request at a time,
for a fixed time each, and prints per-call latency (p50, p99) and rows/s. Ids are drawn from the tokenizer's
vocabulary so every row is valid; the same arrays go through both modes. Writes run.json (machine, start, commit,
settings) and summary.md (the printed table) into the folder <output>.
"""

import argparse
import datetime
import os
import platform
import time
from pathlib import Path

import numpy as np

from client import FeedbackClient
from perf.runs import start_scenario, write_summary
from python_backend.layout import served_tokenizer
from server import ROOT
from server.launch import serving

SHAPES = [(1, 16), (1, 128), (8, 128), (64, 128), (64, 512)]
MODES = ["none", "system"]


def measure(client: FeedbackClient, ids: np.ndarray, mask: np.ndarray, seconds: float) -> dict[str, float]:
    for _ in range(3):  # warm: regions sized, connection open, members warm for this shape
        client.classify_ids(ids, mask)
    latencies = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(latencies) < 10:
        began = time.perf_counter()
        client.classify_ids(ids, mask)
        latencies.append(time.perf_counter() - began)
    ms = np.array(latencies) * 1e3
    return {"p50": np.percentile(ms, 50), "p99": np.percentile(ms, 99), "rows/s": len(ids) * len(ms) / ms.sum() * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="per shape and mode")
    parser.add_argument("--output", type=Path, default=ROOT / "perf" / "results" / "client_shm")
    args = parser.parse_args()
    start_scenario(args.output, args)

    rng = np.random.default_rng(0)
    vocab = served_tokenizer(ROOT / "model_repository").get_vocab_size()
    lines = [
        f"Measured {datetime.date.today()} on {platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
        f"FeedbackClient -> `feedback` over gRPC, one request at a time, {args.seconds:g} s per cell.",
        "",
        "| batch x seq | input bytes | plain gRPC p50 / p99 ms | system shm p50 / p99 ms | plain rows/s | shm rows/s |",
        "|---|---|---|---|---|---|",
    ]
    with serving(ROOT / "model_repository", log=ROOT / "build" / "client_shm_server.log") as server:
        clients = {mode: FeedbackClient(server.grpc_url, shm=mode) for mode in MODES}
        for rows, seq in SHAPES:
            ids = rng.integers(5, vocab, (rows, seq))
            mask = np.ones_like(ids)
            result = {mode: measure(clients[mode], ids, mask, args.seconds) for mode in MODES}
            plain, shm = result["none"], result["system"]
            lines.append(
                f"| {rows} x {seq} | {ids.nbytes + mask.nbytes:,} | {plain['p50']:.2f} / {plain['p99']:.2f} "
                f"| {shm['p50']:.2f} / {shm['p99']:.2f} | {plain['rows/s']:,.0f} | {shm['rows/s']:,.0f} |"
            )
            print(lines[-1], flush=True)
        for client in clients.values():
            client.close()
    print("\n" + "\n".join(lines))
    write_summary(args.output, "client_shm", lines, markdown=True)


if __name__ == "__main__":
    main()
