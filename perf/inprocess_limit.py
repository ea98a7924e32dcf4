"""The no-server limit: the same members and fuse step called directly in this process, nothing else.

Batch 1 with one caller is the latency floor. The compute limit of the machine is the best rows/s over batch sizes
with one caller per core (onnxruntime and torch release the GIL, so the callers overlap like Triton's instances).
"""

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from python_backend.inprocess import InProcessEnsemble


@dataclass(frozen=True)
class Result:
    batch: int
    callers: int
    rows_per_s: float
    p50_us: float  # per call (one call classifies `batch` rows)
    p95_us: float
    p99_us: float
    cpu_us_per_row: float  # this process's CPU time per classified row


def measure_one(
    ensemble: InProcessEnsemble, ids: np.ndarray, mask: np.ndarray, batch: int, callers: int, seconds: float
) -> Result:
    rows = np.arange(batch) % len(ids)
    batch_ids, batch_mask = np.ascontiguousarray(ids[rows]), np.ascontiguousarray(mask[rows])
    ensemble.classify_ids(batch_ids, batch_mask)  # warm-up: first calls allocate
    latencies: list[list[float]] = [[] for _ in range(callers)]
    deadline = time.perf_counter() + seconds

    def loop(out: list[float]) -> None:
        while True:
            started = time.perf_counter()
            if started >= deadline:
                return
            ensemble.classify_ids(batch_ids, batch_mask)
            out.append(time.perf_counter() - started)

    threads = [threading.Thread(target=loop, args=(out,)) for out in latencies]
    cpu, wall = time.process_time(), time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    calls = np.concatenate([np.array(out) for out in latencies]) * 1e6
    done = len(calls) * batch
    p50, p95, p99 = np.percentile(calls, [50, 95, 99])
    return Result(batch, callers, done / wall, p50, p95, p99, cpu / done * 1e6)


def measure(
    repository: Path,
    ids: np.ndarray,
    mask: np.ndarray,
    batch_sizes: tuple[int, ...],
    callers: int,
    seconds: float,
    gpu: bool = False,
) -> list[Result]:
    """Batch 1 with one caller first, then every batch size with `callers` callers."""
    ensemble = InProcessEnsemble(repository, threads=1, gpu=gpu)
    results = [measure_one(ensemble, ids, mask, 1, 1, seconds)]
    results += [measure_one(ensemble, ids, mask, batch, callers, seconds) for batch in batch_sizes]
    return results


def best(results: list[Result]) -> Result:
    return max(results, key=lambda result: result.rows_per_s)
