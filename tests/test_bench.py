"""The benchmark harness end to end in its tiny mode: every system really served and measured, a report written.

Correctness only: no figure is asserted, since timings belong to `make bench`, not to tests.
"""

import csv
import subprocess
import sys

import pytest

from export.members import DEFAULT_PROFILE
from perf.systems import SYSTEMS
from server import ROOT

pytestmark = pytest.mark.slow  # servers of their own, or long runs: after the other tests


def test_tiny_bench_measures_every_system_and_writes_the_report(tmp_path):
    out = tmp_path / "bench"
    command = [sys.executable, "-m", "perf", "--mode", "tiny", "--profile", DEFAULT_PROFILE, "--out", str(out)]
    finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stdout + finished.stderr

    with open(out / "results.csv") as file:
        rows = list(csv.DictReader(file))
    failed = [row for row in rows if row.get("error")]
    assert not failed, failed
    assert {row["system"] for row in rows} == {system.name for system in SYSTEMS}
    assert all(float(row["throughput"]) > 0 and float(row["p99_us"]) >= float(row["p50_us"]) for row in rows)
    with open(out / "inprocess.csv") as file:
        assert [int(row["batch"]) for row in csv.DictReader(file)] == [1, 4]
    with open(out / "triton_models.csv") as file:
        models = {row["model"] for row in csv.DictReader(file)}
    assert {"feedback", "feedback_text", "transformer", "textcnn", "fuse", "tokenizer"} <= models

    with open(out / "mix.csv") as file:
        (mix,) = csv.DictReader(file)
    assert float(mix["long_share"]) > 0.05 and float(mix["tokens_max"]) > 128  # long comments are in the mix

    report = (out / "report.md").read_text()
    assert "run started" in report and "at commit" in report  # from run.json, written when the run began
    assert f"## Profile `{DEFAULT_PROFILE}`" in report and f"({DEFAULT_PROFILE}.png)" in report
    assert "### Targets" in report and "### The length mix" in report and "hand-written comments" in report
    assert (out / f"{DEFAULT_PROFILE}.png").read_bytes().startswith(b"\x89PNG")
    for system in SYSTEMS:
        assert system.label in report
    raw = out / "raw" / DEFAULT_PROFILE
    perf_analyzer_systems = [system for system in SYSTEMS if system.driver == "perf_analyzer"]
    assert len(list(raw.glob("*.csv"))) == len(perf_analyzer_systems)  # perf_analyzer's own CSVs
    for system in SYSTEMS:
        if system.driver == "wrk":
            assert '"requests"' in (raw / f"{system.name}_c1_r0.log").read_text()  # wrk's own report
