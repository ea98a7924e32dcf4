"""Faults under load: a killed model stub or a killed tritonserver comes back, and a bulk run loses nothing.

The server runs under the supervisor (`python -m server`, as `make serve` runs it) on a copy of the repository,
because healing a model touches its config. Recovery times are printed (pytest -s shows them); the README's
reliability table quotes them from a run.
"""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from export import corpus
from server import ROOT, probe
from server.flags import Ports
from server.launch import free_ports
from server.processes import stub_regions
from tests.conftest import repository_copy, run_server

pytestmark = pytest.mark.slow  # servers of their own, or long runs: after the other tests

# fuse and the router in `make test`; every stub with RELIABILITY_FULL=1 (`make reliability`), about 15 s each.
FULL = os.environ.get("RELIABILITY_FULL") == "1"
MODELS = ["fuse", "feedback_routed"] + [
    pytest.param(model, marks=pytest.mark.skipif(not FULL, reason="every stub: make reliability"))
    for model in ("tokenizer",)
]
ROWS = 4000
WAIT = 120  # seconds: only a bound on waiting for something that must happen, not a speed check


class Supervised:
    def __init__(
        self, repository: Path, log: Path, admin_key: str = "test-admin-key-0123456789", model_control: str = "poll"
    ):
        self.ports = Ports(*free_ports(3))
        self.url = f"http://127.0.0.1:{self.ports.http}"
        env = os.environ | {
            "MODEL_REPOSITORY": str(repository),
            "HTTP_PORT": str(self.ports.http),
            "GRPC_PORT": str(self.ports.grpc),
            "METRICS_PORT": str(self.ports.metrics),
            "POLL_SECS": "1",
            "TRITON_ADMIN_KEY": admin_key,
            "MODEL_CONTROL": model_control,
        }
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "server"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def triton_pid(self) -> int:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        tritons = [int(c) for c in children if b"tritonserver" in Path(f"/proc/{c}/cmdline").read_bytes()]
        assert len(tritons) == 1, children  # beside it: its reaper
        return tritons[0]

    def stub_pid(self, model: str) -> int:
        """The Python-backend stub serving `model` (its argv names the model's folder in the repository)."""
        triton = self.triton_pid()
        for child in Path(f"/proc/{triton}/task/{triton}/children").read_text().split():
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            if any(f"/{model}/".encode() in arg for arg in argv):
                return int(child)
        raise LookupError(f"no stub for {model} under tritonserver {triton}")

    def ready(self) -> bool:
        return all(check.ok for check in probe.probe(self.url, timeout=2))

    def wait(self, ready: bool) -> float:
        """Seconds until the canary probe says `ready`."""
        start = time.monotonic()
        while self.ready() != ready:
            assert self.process.poll() is None, f"supervisor exited (log: {self.log})"
            assert time.monotonic() - start < WAIT, f"probe not {ready} after {WAIT} s (log: {self.log})"
            time.sleep(0.1)
        return time.monotonic() - start

    def stop(self) -> None:
        regions = set()
        try:
            if self.process.poll() is None:
                regions = stub_regions(self.triton_pid())
        finally:  # whatever went wrong above, the supervisor is stopped: it stops its server
            self.process.terminate()
            self.process.wait(60)
        assert not [r for r in regions if r.exists()], "shared-memory regions left behind"


def ready_supervised(folder: Path):
    """A `make serve` of its own on a copy of the repository in `folder`: yielded once ready, stopped after."""
    repository = repository_copy(folder / "repository")
    server = Supervised(repository, folder / "server.log")
    try:
        server.wait(ready=True)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def supervised(tmp_path_factory):
    yield from ready_supervised(tmp_path_factory.mktemp("supervised"))


@pytest.fixture(scope="module")
def comments(tmp_path_factory) -> tuple[Path, list[str]]:
    rows = [comment.text for comment in corpus.generate(ROWS, seed=31)]
    source = tmp_path_factory.mktemp("comments") / "comments.csv"
    with source.open("w", newline="") as file:
        csv.writer(file).writerows([("id", "text"), *enumerate(rows)])
    return source, rows


def bulk_run(server: Supervised, source: Path, target: Path, shm: str, concurrency: int) -> subprocess.Popen:
    args = ["--input", str(source), "--output", str(target), "--batch-size", "16", "--retries", "12", "--shm", shm]
    args += ["--concurrency", str(concurrency)]
    return subprocess.Popen(
        [sys.executable, "-m", "client", "classify", *args, "--url", f"127.0.0.1:{server.ports.grpc}"],
        env=os.environ | {"TRITON_ADMIN_KEY": "test-admin-key-0123456789"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def under_load(
    server: Supervised, comments, target: Path, fault, shm: str = "none", concurrency: int = 1
) -> tuple[float, float]:
    """Run `fault` while a bulk run is under way; return (seconds until unready, seconds until serving again)."""
    source, rows = comments
    bulk = bulk_run(server, source, target, shm, concurrency)
    try:
        deadline = time.monotonic() + WAIT
        while not target.exists() or target.stat().st_size < 100_000:  # a few hundred rows in
            assert bulk.poll() is None, bulk.communicate()
            assert time.monotonic() < deadline, f"the bulk run wrote too little in {WAIT} s"
            time.sleep(0.02)
        fault()
        unready = server.wait(ready=False)
        back = server.wait(ready=True)
        _, stderr = bulk.communicate(timeout=WAIT)
        assert bulk.returncode == 0, stderr
    finally:
        if bulk.poll() is None:
            bulk.kill()
            bulk.wait()
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert [line["row"] for line in lines] == list(range(len(rows)))
    assert [line["text"] for line in lines] == rows
    return unready, unready + back


@pytest.mark.parametrize("model", MODELS)
def test_killed_stub_is_detected_and_healed_while_a_bulk_run_loses_nothing(supervised, comments, tmp_path, model):
    stub = supervised.stub_pid(model)
    unready, back = under_load(supervised, comments, tmp_path / "scored.jsonl", lambda: os.kill(stub, signal.SIGKILL))
    assert supervised.stub_pid(model) != stub
    print(f"\nkill -9 {model} stub: probe false after {unready:.1f} s, serving again after {back:.1f} s")


def test_killed_server_is_restarted_while_a_bulk_run_loses_nothing(supervised, comments, tmp_path):
    triton = supervised.triton_pid()
    regions = stub_regions(triton)
    assert regions
    down, back = under_load(
        supervised, comments, tmp_path / "scored.jsonl", lambda: os.killpg(triton, signal.SIGKILL), shm="system"
    )
    assert supervised.triton_pid() != triton
    assert not [r for r in regions if r.exists()], "the killed server's stub regions were not removed"
    print(f"\nkill -9 tritonserver: probe false after {down:.1f} s, serving again after {back:.1f} s")


def test_probe_fails_a_server_that_answers_wrongly(tmp_path):
    """Every model loads and answers well-formed probabilities, but fuse's classes are in the wrong order: the
    canary comments get wrong labels, and the probe must say so, not only that rows sum to 1."""
    repository = repository_copy(tmp_path / "repository")
    config = repository / "fuse" / "config.pbtxt"
    names = re.search(r'key: "class_names" value: \{ string_value: "([^"]+)"', config.read_text())[1]
    config.write_text(config.read_text().replace(names, ",".join(reversed(names.split(",")))))
    with run_server(repository, tmp_path / "server.log") as server:
        checks = {check.model: check for check in probe.probe(f"http://{server.http_url}", repository=repository)}
    assert {"feedback_text", "feedback", "feedback_routed"} <= set(checks)
    for check in checks.values():
        assert not check.ok and "the canary comments' labels are" in check.error, check


def test_probe_fails_a_member_at_half_weight(tmp_path):
    """A degraded member: the TextCNN's weights halved. Its most confident canary rows keep their labels; the
    borderline row of each class (the right answer by the smallest margin export saw) must not."""
    repository = repository_copy(tmp_path / "repository")
    weights = repository / "textcnn" / "1" / "model.pt"
    module = torch.jit.load(str(weights))
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.mul_(0.5)
    module.save(str(weights))
    with run_server(repository, tmp_path / "server.log") as server:
        checks = {check.model: check for check in probe.probe(f"http://{server.http_url}", repository=repository)}
    assert {"feedback_text", "feedback", "feedback_routed"} <= set(checks)
    for check in checks.values():
        assert not check.ok and "the canary comments' labels are" in check.error, check


def test_explicit_mode_heals_the_model_alone_without_a_restart(comments, tmp_path):
    """No poll to pick up a touched folder: the supervisor asks the repository API to load the model it touched;
    tritonserver itself keeps running, and so do the ensembles. Under a bulk run: requests queued for the dead stub
    fail one batch a second, so the canaries time out behind them, and the supervisor must find the dead stub
    itself rather than restart a server that answers nothing."""
    repository = repository_copy(tmp_path / "repository")
    server = Supervised(repository, tmp_path / "server.log", model_control="explicit")
    try:
        server.wait(ready=True)
        triton, stub = server.triton_pid(), server.stub_pid("fuse")
        kill = lambda: os.kill(stub, signal.SIGKILL)  # noqa: E731
        unready, back = under_load(server, comments, tmp_path / "scored.jsonl", kill, concurrency=8)
        assert server.triton_pid() == triton, "the whole server was restarted"
        assert server.stub_pid("fuse") != stub
    finally:
        server.stop()
    assert re.search(r"supervisor: fuse: .+, reloading it", server.log.read_text())
    print(f"\nexplicit mode, kill -9 fuse stub: probe false after {unready:.1f} s, serving again after {back:.1f} s")
