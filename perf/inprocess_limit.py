"""The no-server limit: the same members and fuse step called directly, with nothing else in between.

Batch 1 with one caller is the latency floor. The compute limit of the machine is the best rows/s over batch sizes
with one caller per core. Each caller is its own process with its own copy of the models, as each Triton instance
is: threads of one process do not overlap here (onnxruntime's `run` kept two threads at one core's worth of CPU).
"""

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
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
    cpu_us_per_row: float  # the callers' CPU time per classified row
    fuse_p50_us: float  # the fuse step alone on this batch: what a served fuse step costs beyond its hand-off


MIN_CALLS = 2  # per caller, however long: a minilm batch of 32 takes seconds
FUSE_CALLS = 300
_ensemble: InProcessEnsemble | None = None  # one per caller process


def _load(repository: Path, gpu: bool) -> None:
    global _ensemble
    _ensemble = InProcessEnsemble(repository, threads=1, gpu=gpu)


def _call_for(ids: np.ndarray, mask: np.ndarray, seconds: float) -> tuple[np.ndarray, float, float, float]:
    """Call the ensemble on this batch for `seconds`: (latencies in µs, wall s, CPU s, fuse-alone p50 µs)."""
    _ensemble.classify_ids(ids, mask)  # warm-up: first calls allocate
    latencies = []
    cpu, started = time.process_time(), time.perf_counter()
    while time.perf_counter() - started < seconds or len(latencies) < MIN_CALLS:
        call = time.perf_counter()
        _ensemble.classify_ids(ids, mask)
        latencies.append(time.perf_counter() - call)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    member_outputs = [member(ids, mask) for member in _ensemble.members]
    fuse = []
    for _ in range(FUSE_CALLS):
        call = time.perf_counter()
        _ensemble.fuse(member_outputs)
        fuse.append(time.perf_counter() - call)
    return np.array(latencies) * 1e6, wall, cpu, float(np.median(fuse)) * 1e6


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
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch or onnxruntime state inherited
    with ProcessPoolExecutor(callers, context, initializer=_load, initargs=(repository, gpu)) as pool:
        results = []
        for batch, count in [(1, 1)] + [(batch, callers) for batch in batch_sizes]:
            rows = np.arange(batch) % len(ids)
            batch_ids, batch_mask = np.ascontiguousarray(ids[rows]), np.ascontiguousarray(mask[rows])
            # An idle worker takes each job, so `count` jobs run in `count` processes at once.
            runs = [f.result() for f in [pool.submit(_call_for, batch_ids, batch_mask, seconds) for _ in range(count)]]
            latencies = np.concatenate([run[0] for run in runs])
            done = len(latencies) * batch
            p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
            wall, cpu = max(run[1] for run in runs), sum(run[2] for run in runs)
            fuse = float(np.median([run[3] for run in runs]))
            results.append(Result(batch, count, done / wall, p50, p95, p99, cpu / done * 1e6, fuse))
    return results
