"""The no-server limit: the same tokenizer, members and fuse step called directly, with nothing else in between, on
the same comments as the served systems (text in: tokenizing is part of the task).

Batch 1 with one caller is the latency floor. The compute limit of the machine is the best comments/s over batch
sizes with one caller per core, each batch one ragged call as Triton's dynamic batcher would make it. Each caller is
its own process with its own copy of the models, as each Triton instance is: threads of one process do not overlap
here (onnxruntime's `run` kept two threads at one core's worth of CPU).
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
    rows_per_s: float  # comments classified per second, all callers together
    p50_us: float  # per call (one call classifies `batch` comments)
    p95_us: float
    p99_us: float
    cpu_us_per_row: float  # the callers' CPU time per classified comment


MIN_CALLS = 2  # per caller, however long
_ensemble: InProcessEnsemble | None = None  # one per caller process


def _load(repository: Path, gpu: bool) -> None:
    global _ensemble
    _ensemble = InProcessEnsemble(repository, threads=1, gpu=gpu)


def _call_for(texts: list[str], batch: int, start: int, seconds: float) -> tuple[np.ndarray, float, float]:
    """Classify consecutive batches of `texts` (from `start`, wrapping) for `seconds`: (µs per call, wall s, CPU s)."""
    batches = [[texts[(start + i * batch + j) % len(texts)] for j in range(batch)] for i in range(len(texts))]
    _ensemble.classify(batches[0])  # warm-up: first calls allocate
    latencies = []
    cpu, started = time.process_time(), time.perf_counter()
    while time.perf_counter() - started < seconds or len(latencies) < MIN_CALLS:
        call = time.perf_counter()
        _ensemble.classify(batches[len(latencies) % len(batches)])
        latencies.append(time.perf_counter() - call)
    return np.array(latencies) * 1e6, time.perf_counter() - started, time.process_time() - cpu


def measure(
    repository: Path, texts: list[str], batch_sizes: tuple[int, ...], callers: int, seconds: float, gpu: bool = False
) -> list[Result]:
    """Batch 1 with one caller first, then every batch size with `callers` callers."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch or onnxruntime state inherited
    with ProcessPoolExecutor(callers, context, initializer=_load, initargs=(repository, gpu)) as pool:
        results = []
        for batch, count in [(1, 1)] + [(batch, callers) for batch in batch_sizes]:
            # An idle worker takes each job, so `count` jobs run in `count` processes at once, each from elsewhere
            # in the mix.
            jobs = [pool.submit(_call_for, texts, batch, i * len(texts) // count, seconds) for i in range(count)]
            runs = [job.result() for job in jobs]
            latencies = np.concatenate([run[0] for run in runs])
            done = len(latencies) * batch
            p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
            wall, cpu = max(run[1] for run in runs), sum(run[2] for run in runs)
            results.append(Result(batch, count, done / wall, p50, p95, p99, cpu / done * 1e6))
    return results
