"""Bulk scoring of a messy real-world file through the CLI: one odd comment never stops a run or loses its
neighbours; every input row comes out once, in order, scored or as an error record, whatever the server says."""

import csv
import io
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tritonclient.http as httpclient

from client.errors import ROWS_FAILED_EXIT_CODE, ServerUnavailable
from export import corpus
from server import ROOT
from server.flags import Ports
from server.launch import free_ports, start, wait_ready
from server.processes import stop
from tests.conftest import REPOSITORY, repository_copy, run_server
from tests.test_client import feedback_cli, kill_server
from tests.test_recovery import ready_supervised

pytestmark = pytest.mark.slow  # servers of their own, or long runs: after the other tests

GOOD = [comment.text for comment in corpus.generate(10_000, seed=5)]
ODD = [  # (text, encoding): the rows a spreadsheet export really contains, before the 10,000 good ones
    ('He said "the invoice\nis wrong", twice', "utf-8"),  # quotes and an embedded newline
    ("Le prix est très élevé pour ce que c'est", "cp1252"),  # a row saved from a spreadsheet as cp1252
    ("", "utf-8"),
    ("   \t ", "utf-8"),
    ("slow " * 4_000, "utf-8"),  # 20 KB
    ("x" * 2_000_000, "utf-8"),  # 2 MB
    (None, "utf-8"),  # the row ends before its text column
]


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    """A CSV with a BOM, mixed encodings, odd rows and 10,000 good ones; its texts as the server should see them."""
    path = tmp_path_factory.mktemp("bulk") / "comments.csv"
    with path.open("wb") as file:
        file.write("\ufeffid,text\r\n".encode())
        for number, (text, encoding) in enumerate(ODD + [(text, "utf-8") for text in GOOD]):
            line = io.StringIO()
            csv.writer(line).writerow([number] if text is None else [number, text])
            file.write(line.getvalue().encode(encoding))
    return path


def run(server, source, target, *extra, **options):
    done = feedback_cli(
        "classify", "--input", str(source), "--output", str(target), "--url", server.grpc_url, *extra, **options
    )
    lines = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    return done, lines


def assert_good_rows_match(lines, reference):
    """The 10,000 good rows (and the quoted one) equal the in-process computation."""
    scored = [line for line in lines if line["row"] == 0 or line["row"] >= len(ODD)]
    expected = reference.classify([line["text"] for line in scored])
    names = reference.fuse.class_names
    probs = np.array([[line["probabilities"][name] for name in names] for line in scored])
    np.testing.assert_allclose(probs, expected["PROBS"], atol=1e-5, rtol=0)


def test_messy_file_every_row_once_in_order_bad_rows_as_errors(server, reference, messy, tmp_path):
    done, lines = run(server, messy, tmp_path / "scored.jsonl")
    assert done.returncode == ROWS_FAILED_EXIT_CODE, done.stderr
    assert "rows read 10007, scored 10001, failed 6, truncated 0" in done.stderr
    assert [line["row"] for line in lines] == list(range(len(ODD) + len(GOOD)))
    errors = {line["row"]: line["error"] for line in lines if "error" in line}
    assert sorted(errors) == [1, 2, 3, 4, 5, 6]
    assert "not valid utf-8" in errors[1] and "empty comment" in errors[2] and "empty comment" in errors[3]
    assert "20000 bytes, the limit is 16384" in errors[4] and "2000000 bytes" in errors[5]
    assert "no value in column 'text'" in errors[6]
    assert len(lines[5]["text"]) <= 200  # an error record shows the start of the text only
    assert lines[0]["text"] == ODD[0][0]
    assert_good_rows_match(lines, reference)


def test_truncate_and_replace_score_what_can_be_scored(server, reference, messy, tmp_path):
    done, lines = run(server, messy, tmp_path / "scored.jsonl", "--truncate", "--errors", "replace")
    assert done.returncode == ROWS_FAILED_EXIT_CODE, done.stderr
    assert "rows read 10007, scored 10004, failed 3, truncated 2" in done.stderr
    assert sorted(line["row"] for line in lines if "error" in line) == [2, 3, 6]
    assert lines[1]["text"].startswith("Le prix est tr\ufffds") and "label" in lines[1]
    assert lines[4]["truncated"] and len(lines[4]["text"].encode()) <= 16384 and "label" in lines[4]
    assert lines[5]["truncated"] and "label" in lines[5]
    assert_good_rows_match(lines, reference)


def test_named_encoding_and_a_clean_file_exit_zero(server, tmp_path):
    source = tmp_path / "latin.csv"
    source.write_bytes("text\r\nLe prix est très élevé\r\nthe invoice charged me twice\r\n".encode("cp1252"))
    done, lines = run(server, source, tmp_path / "scored.jsonl", "--encoding", "cp1252")
    assert done.returncode == 0, done.stderr
    assert lines[0]["text"] == "Le prix est très élevé" and lines[1]["label"] == "billing"


@pytest.fixture(scope="module")
def supervised(tmp_path_factory):
    """A server of its own, as `make serve` runs it: killing a gRPC client with requests in flight can crash
    tritonserver 2.51 (SIGSEGV sending a response to the cancelled call), and then the supervisor restarts it."""
    yield from ready_supervised(tmp_path_factory.mktemp("bulk_supervised"))


def test_resume_after_a_kill_gives_the_same_output(server, supervised, messy, tmp_path):
    _, complete = run(server, messy, tmp_path / "complete.jsonl")
    target = tmp_path / "resumed.jsonl"
    url = f"127.0.0.1:{supervised.ports.grpc}"
    argv = [sys.executable, "-m", "client", "classify", "--input", str(messy), "--output", str(target)]
    argv += ["--url", url, "--batch-size", "16"]
    killed = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while (not target.exists() or target.stat().st_size < 200_000) and time.monotonic() < deadline:
            assert killed.poll() is None, "the run ended before it could be killed"
            time.sleep(0.02)
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    assert len(target.read_text(encoding="utf-8").splitlines()) < len(complete)  # killed mid-run
    done = feedback_cli(
        "classify",
        "--input",
        str(messy),
        "--output",
        str(target),
        "--url",
        url,
        "--resume",
        "--retries",
        "12",
        timeout=300,
    )
    resumed = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert done.returncode == ROWS_FAILED_EXIT_CODE, done.stderr
    assert same_records(resumed, complete)


def same_records(lines: list[dict], expected: list[dict]) -> bool:
    """The same rows with the same labels, texts and errors, and probabilities within 1e-5: a row's answer may move
    in the last float digits with the rows it was batched with (the members' sums run in another order)."""

    def numbers(record: dict) -> list[float]:
        values = [record.get("probabilities", {})] + list(record.get("members", {}).values())
        return [value for probs in values for value in probs.values()]

    def rest(record: dict) -> dict:
        return {key: value for key, value in record.items() if key not in ("probabilities", "members")}

    assert [rest(line) for line in lines] == [rest(line) for line in expected]
    flat = [[value for line in records for value in numbers(line)] for records in (lines, expected)]
    np.testing.assert_allclose(*flat, atol=1e-5, rtol=0)
    return True


def write_csv(path, texts: list[str]):
    with path.open("w", newline="", encoding="utf-8") as file:
        csv.writer(file).writerows([("text",), *[(text,) for text in texts]])
    return path


def bulk_run(source, target, url: str, *extra: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "client", "classify", "--input", str(source), "--output", str(target)]
    return subprocess.Popen(
        [*argv, "--url", url, "--batch-size", "16", *extra], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def wait_for_rows(target, bulk: subprocess.Popen, rows: int) -> None:
    deadline = time.monotonic() + 120
    while not target.exists() or target.read_bytes().count(b"\n") < rows:
        assert bulk.poll() is None, bulk.communicate()
        assert time.monotonic() < deadline, f"the bulk run wrote fewer than {rows} rows in 120 s"
        time.sleep(0.05)


def test_a_row_the_server_refuses_fails_alone(reference, tmp_path):
    """A model that reads one window per comment (as a --from-pretrained export does) refuses a longer comment,
    and with it the request it came in: the rows of that batch are sent again one by one, and only it fails."""
    repository = repository_copy(tmp_path / "repository")
    config = repository / "tokenizer" / "config.pbtxt"
    config.write_text(config.read_text() + 'parameters { key: "windows_per_comment" value: { string_value: "1" } }\n')
    texts = GOOD[:40]
    texts[21] = "the parcel came late and the box was crushed, " * 40  # about 440 tokens
    target = tmp_path / "scored.jsonl"
    with run_server(repository, tmp_path / "server.log") as own:
        done, lines = run(own, write_csv(tmp_path / "comments.csv", texts), target, "--batch-size", "16")
    assert done.returncode == ROWS_FAILED_EXIT_CODE, done.stderr
    assert [line["row"] for line in lines] == list(range(40))
    assert [line["row"] for line in lines if "error" in line] == [21]
    assert lines[21]["error"].startswith("refused by the server: ") and "shorten the comment" in lines[21]["error"]
    scored = [line for line in lines if "label" in line]
    expected = reference.classify([line["text"] for line in scored])
    assert [line["label"] for line in scored] == [label.decode() for label in expected["LABEL"][:, 0]]


def test_a_member_unloaded_halfway_fails_its_rows_alone_with_the_cause(reference, tmp_path):
    texts = GOOD[:3000]
    source, target = write_csv(tmp_path / "comments.csv", texts), tmp_path / "scored.jsonl"
    with run_server(REPOSITORY, tmp_path / "server.log", model_control="explicit") as own:
        bulk = bulk_run(source, target, own.grpc_url, "--retries", "1")
        try:
            wait_for_rows(target, bulk, 500)
            with httpclient.InferenceServerClient(own.http_url) as admin:
                admin.unload_model("textcnn", headers=own.admin_headers("http"))
            _, stderr = bulk.communicate(timeout=300)
        finally:
            if bulk.poll() is None:
                bulk.kill()
    assert bulk.returncode == ROWS_FAILED_EXIT_CODE, stderr
    lines = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert [line["row"] for line in lines] == list(range(len(texts)))
    scored = [line for line in lines if "label" in line]
    failed = [line for line in lines if "error" in line]
    assert len(scored) >= 500 and len(failed) >= 1000, (len(scored), len(failed))
    causes = {line["error"] for line in failed}
    # Unloading a member unloads the ensembles that use it: the cause names the ensemble.
    assert causes == {"ModelUnavailable: Request for unknown model: 'feedback_text' has no available versions"}
    expected = reference.classify([line["text"] for line in scored[::10]])
    assert [line["label"] for line in scored[::10]] == [label.decode() for label in expected["LABEL"][:, 0]]


def test_a_server_gone_for_good_stops_the_run_and_resume_finishes_it(reference, tmp_path):
    texts = GOOD[:2000]
    source, target = write_csv(tmp_path / "comments.csv", texts), tmp_path / "scored.jsonl"
    ports, log = Ports(*free_ports(3)), tmp_path / "server.log"
    server = start(REPOSITORY, ports, log=log)
    try:
        wait_ready(server, ports)
        bulk = bulk_run(source, target, f"127.0.0.1:{ports.grpc}", "--retries", "1")
        try:
            wait_for_rows(target, bulk, 300)
            kill_server(server)
            _, stderr = bulk.communicate(timeout=120)
        finally:
            if bulk.poll() is None:
                bulk.kill()
        written = target.read_text(encoding="utf-8").splitlines()
        assert bulk.returncode == ServerUnavailable.exit_code, stderr
        assert f"stopped, {len(texts) - len(written)} rows not attempted" in stderr.decode()
        assert "with --resume to continue" in stderr.decode()
        assert [json.loads(line)["row"] for line in written] == list(range(len(written)))
        assert all("label" in json.loads(line) for line in written)

        server = start(REPOSITORY, ports, log=log)
        wait_ready(server, ports)
        resumed = bulk_run(source, target, f"127.0.0.1:{ports.grpc}", "--resume")
        _, stderr = resumed.communicate(timeout=300)
        assert resumed.returncode == 0, stderr
    finally:
        if server.poll() is None:
            stop(server)
    lines = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert [line["row"] for line in lines] == list(range(len(texts))) and all("label" in line for line in lines)
    expected = reference.classify(texts[::50])
    assert [line["label"] for line in lines[::50]] == [label.decode() for label in expected["LABEL"][:, 0]]
