"""What the tests and the benchmarks in perf/ share: model folders to deploy (candidates.py), steady client load that
records every answer (steady_load.py), and what Triton counts itself (triton_stats.py). perf/ is the benchmark."""
