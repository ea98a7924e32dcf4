"""The client library and CLI against real tritonservers: protocols x shared memory, errors, hygiene, bulk scoring."""

import asyncio
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.utils.shared_memory as system_shm

from client import AsyncFeedbackClient, Backoff, FeedbackClient
from client.errors import (
    USAGE_EXIT_CODE,
    AdminKeyRequired,
    InvalidInput,
    ModelUnavailable,
    ServerUnavailable,
    SharedMemoryError,
    Timeout,
    translate,
)
from client.shm import cuda_module
from export import corpus, datasets
from harness.triton_stats import request_counts
from server.flags import Ports
from server.launch import free_ports, start, wait_ready
from server.processes import group_members, mapped_shm_regions, stop, stub_regions
from tests.conftest import REPOSITORY, cancelled, failed_requests

TEXTS = datasets.synthetic().held_out.texts[:100] + ["", "ok", "прайс 💸 " * 200]


def cuda_unavailable() -> str | None:
    try:
        cuda_module()
    except SharedMemoryError as error:
        return str(error)
    return None


MODES = [
    ("grpc", "none"),
    ("grpc", "system"),
    pytest.param("grpc", "cuda", marks=pytest.mark.skipif(bool(cuda_unavailable()), reason=str(cuda_unavailable()))),
    ("http", "none"),
    ("http", "system"),
]


def url(server, protocol: str) -> str:
    return server.grpc_url if protocol == "grpc" else server.http_url


def our_shm_files(client: FeedbackClient) -> list[str]:
    return [p.name for p in Path("/dev/shm").glob(f"{client.prefix}*")]


def as_arrays(predictions) -> dict[str, np.ndarray]:
    return {
        "PROBS": np.array([list(p.probabilities.values()) for p in predictions]),
        "MEMBER_PROBS": np.array([[list(m.values()) for m in p.members.values()] for p in predictions]),
        "LABEL": np.array([[p.label.encode()] for p in predictions], dtype=object),
        "WINDOWS": np.array([[p.windows] for p in predictions], dtype=np.int32),
    }


def assert_same(served: dict, expected: dict) -> None:
    np.testing.assert_allclose(served["PROBS"], expected["PROBS"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(served["MEMBER_PROBS"], expected["MEMBER_PROBS"], atol=1e-5, rtol=0)
    assert served["LABEL"].tolist() == expected["LABEL"].tolist()
    assert served["WINDOWS"].tolist() == expected["WINDOWS"].tolist()


@pytest.mark.parametrize(("protocol", "shm"), MODES)
def test_every_protocol_and_shm_mode_gives_the_same_answer(server, reference, protocol, shm):
    with FeedbackClient(url(server, protocol), protocol=protocol, shm=shm, admin_key=server.admin_key) as client:
        predictions = client.classify(TEXTS)
        assert [p.label for p in predictions] == [p.label for p in client.classify(TEXTS)]  # regions reused
        ids, mask, _ = reference.tokenize(TEXTS[:5])
        assert_same(client.classify_ids(ids, mask), reference.classify_ids(ids, mask))
        assert client.classify([]) == []
    assert_same(as_arrays(predictions), reference.classify(TEXTS))
    assert set(predictions[0].members) == {"transformer", "textcnn"}
    assert not our_shm_files(client)


def test_shm_region_grows_from_one_row_to_a_64_by_512_batch(server, reference):
    rng = np.random.default_rng(0)
    with FeedbackClient(server.grpc_url, shm="system", admin_key=server.admin_key) as client:
        for rows, seq in ((1, 4), (64, 512), (3, 16)):
            ids = rng.integers(5, 600, (rows, seq))
            mask = np.ones_like(ids)
            assert_same(client.classify_ids(ids, mask), reference.classify_ids(ids, mask))
        sizes = [region.byte_size for slot in client.slots for region in slot.regions.values()]
        assert max(sizes) >= 2 * 64 * 512 * 8


def test_pipelined_stream_keeps_order(server, reference):
    batches = [TEXTS[i : i + 7] for i in range(0, len(TEXTS), 7)]
    with FeedbackClient(server.grpc_url, shm="system", in_flight=4, admin_key=server.admin_key) as client:
        streamed = [p for batch in client.classify_stream(batches) for p in batch]
        assert len(client.slots) > 1
    assert_same(as_arrays(streamed), reference.classify(TEXTS))


def test_async_client_matches_in_process(server, reference):
    async def run():
        async with AsyncFeedbackClient(server.grpc_url, in_flight=4) as client:
            parts = await asyncio.gather(*(client.classify(TEXTS[i : i + 10]) for i in range(0, len(TEXTS), 10)))
            ids, mask, _ = reference.tokenize(TEXTS[:3])
            return [p for part in parts for p in part], await client.classify_ids(ids, mask)

    predictions, by_ids = asyncio.run(run())
    assert_same(as_arrays(predictions), reference.classify(TEXTS))
    assert_same(by_ids, reference.classify(TEXTS[:3]))


def test_no_region_left_after_1000_calls_and_errors_mid_call(server):
    many = FeedbackClient(server.grpc_url, shm="system", backoff=Backoff(retries=0), admin_key=server.admin_key)
    for i in range(1000):
        many.classify([TEXTS[i % len(TEXTS)]])
    with pytest.raises(InvalidInput, match="the limit is 16384"):
        many.classify(["a" * 20000])  # refused by the tokenizer after the text was written to the region
    assert len(our_shm_files(many)) == 2  # one input and one output region, reused by every call
    late = FeedbackClient(server.grpc_url, shm="system", backoff=Backoff(retries=0), admin_key=server.admin_key)
    late.classify(TEXTS[:1])
    late.timeout = 1e-4
    with pytest.raises(Timeout):
        late.classify(TEXTS)  # the timeout passes while the request is in flight, writing to the regions
    late.timeout = None
    assert late.classify(TEXTS[:1])
    assert len(late.slots) == 2  # a fresh slot served that; the retired one is released at close
    for client in (many, late):
        client.close()
        assert not our_shm_files(client)
    with FeedbackClient(server.grpc_url, admin_key=server.admin_key) as observer:
        assert not [name for name in observer.registered_regions() if name.startswith((many.prefix, late.prefix))]


def timed_out_then_closed(url: str, texts: list[str]) -> None:
    """One call that gives up at once while the request runs on, then close(), as FeedbackClient does it."""
    client = FeedbackClient(url, backoff=Backoff(retries=0))
    client.classify(texts[:1])  # the schema, fetched before the timeout is set
    client.timeout = 1e-4
    with pytest.raises(Timeout):
        client.classify(texts)
    client.close()


async def timed_out_then_closed_async(url: str, texts: list[str]) -> None:
    client = AsyncFeedbackClient(url, backoff=Backoff(retries=0))
    await client.classify(texts[:1])
    client.timeout = 1e-4
    with pytest.raises(Timeout):
        await client.classify(texts)
    await client.close()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_close_lets_a_request_that_timed_out_here_finish_on_the_server(server, kind):
    """Closing a gRPC channel cancels the request still running on it, which can crash tritonserver 2.51 or leave an
    ensemble request counted in flight for good (docs/pitfalls.md): close() waits for the answer instead."""

    def counts() -> tuple[int, int]:
        failed = sum(cancelled(failed_requests(server.ports.metrics)).values())
        return request_counts(server.ports.metrics, "success")["feedback_text"], failed

    answered, cancels = counts()
    texts = [text * 4 for text in TEXTS[:64]]  # still in flight when close() is called
    if kind == "sync":
        timed_out_then_closed(server.grpc_url, texts)
    else:
        asyncio.run(timed_out_then_closed_async(server.grpc_url, texts))
    deadline = time.monotonic() + 10
    while counts() != (answered + 2, cancels) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert counts() == (answered + 2, cancels), f"(answered, cancelled) were {(answered, cancels)} before"


def test_two_clients_never_share_a_region(server):
    with (
        FeedbackClient(server.grpc_url, shm="system", admin_key=server.admin_key) as a,
        FeedbackClient(server.grpc_url, shm="system", admin_key=server.admin_key) as b,
    ):
        a.classify(TEXTS[:2])
        b.classify(TEXTS[:3])
        assert set(our_shm_files(a)).isdisjoint(our_shm_files(b))
        assert {name for name in a.registered_regions() if name.startswith((a.prefix, b.prefix))} == set(
            our_shm_files(a) + our_shm_files(b)
        )


def test_server_errors_become_clear_client_errors(server):
    with FeedbackClient(server.grpc_url, backoff=Backoff(retries=0)) as client:
        with pytest.raises(ModelUnavailable, match="unknown model"):
            client.infer("no_such_model", {"TEXT": np.array([[b"x"]], dtype=object)})
        with pytest.raises(InvalidInput, match="token ids must be in"):
            client.classify_ids(np.full((1, 4), 10**6), np.ones((1, 4)))
        assert client.classify(["still serving"])
    triton = grpcclient.InferenceServerClient(server.grpc_url)
    name = f"feedback_test_small_{os.getpid()}"
    handle = system_shm.create_shared_memory_region(name, f"/{name}", 8)
    try:
        triton.register_system_shared_memory(name, f"/{name}", 8, headers=server.admin_headers("grpc"))
        text = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
        text.set_data_from_numpy(np.array([[b"hello"]], dtype=object))
        too_small = grpcclient.InferRequestedOutput("PROBS")
        too_small.set_shared_memory(name, 8)
        unregistered = grpcclient.InferRequestedOutput("PROBS")
        unregistered.set_shared_memory("never_registered", 24)
        for output in (too_small, unregistered):
            with pytest.raises(Exception) as raw:
                triton.infer("feedback_text", [text], outputs=[output])
            assert isinstance(translate(raw.value, server.grpc_url), SharedMemoryError), raw.value
    finally:
        triton.unregister_system_shared_memory(name, headers=server.admin_headers("grpc"))
        system_shm.destroy_shared_memory_region(handle)
        triton.close()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_shm_without_the_admin_key_is_refused_and_leaves_nothing(server, protocol):
    with FeedbackClient(url(server, protocol), protocol=protocol, shm="system") as client:
        with pytest.raises(AdminKeyRequired, match="restricted"):
            client.classify(["hello"])
    assert not our_shm_files(client)
    with FeedbackClient(server.grpc_url, admin_key=server.admin_key) as observer:
        assert not [name for name in observer.registered_regions() if name.startswith(client.prefix)]


@pytest.mark.unit
def test_unreachable_server_is_reported_as_unavailable():
    (port,) = free_ports(1)
    for protocol in ("grpc", "http"):
        with FeedbackClient(f"127.0.0.1:{port}", protocol=protocol, backoff=Backoff(retries=1, base=0.01)) as client:
            with pytest.raises(ServerUnavailable, match="cannot connect"):
                client.classify(["hello"])


def feedback_cli(*args: str, admin_key: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = os.environ | ({"TRITON_ADMIN_KEY": admin_key} if admin_key else {})
    return subprocess.run(
        [sys.executable, "-m", "client", *args], capture_output=True, text=True, timeout=timeout, check=False, env=env
    )


def test_resume_is_refused_for_another_input_or_column(server, tmp_path):
    """--resume skips as many input rows as the output holds, so it must be the same input read the same way: another
    file, the same file with other comments, or another column is refused in one line, and the output left alone."""
    source, rows = tmp_path / "comments.csv", "text,note\nthe invoice charged me twice,a\nsupport never answered,b\n"
    source.write_text(rows)
    other = tmp_path / "other.csv"
    other.write_text(rows)
    target = tmp_path / "scored.jsonl"

    def classify(path: Path, *args: str) -> subprocess.CompletedProcess:
        return feedback_cli("classify", "--input", str(path), "--output", str(target), "--url", server.grpc_url, *args)

    assert (scored := classify(source)).returncode == 0, scored.stderr
    before = target.read_bytes()
    refused = [classify(other, "--resume"), classify(source, "--column", "note", "--resume")]
    source.write_text(rows.replace("twice", "three times"))  # same path and size, other comments
    refused.append(classify(source, "--resume"))
    for done, differs in zip(
        refused, ("other input (", "other column (", "other input_first_mib_sha256 ("), strict=True
    ):
        assert done.returncode == USAGE_EXIT_CODE, done.stderr
        assert f"--resume: the output was scored with {differs}" in done.stderr
        assert target.read_bytes() == before
    source.write_text(rows)
    assert (same := classify(source, "--resume")).returncode == 0, same.stderr
    assert target.read_bytes() == before  # nothing left to score


def test_cli_classify_health_models_and_exit_codes(server, tmp_path):
    done = feedback_cli(
        "classify", "the invoice charged me twice", "support never answered my ticket", "--url", server.grpc_url
    )
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["label"] for line in done.stdout.splitlines()] == ["billing", "support"]
    table = feedback_cli(
        "classify",
        "the invoice charged me twice",
        "--format",
        "table",
        "--url",
        server.http_url,
        "--protocol",
        "http",
        "--shm",
        "system",
        admin_key=server.admin_key,
    )
    assert table.returncode == 0 and table.stdout.splitlines()[1].split()[0] == "billing", table.stdout
    assert feedback_cli("health", "--url", server.grpc_url).returncode == 0
    listed = feedback_cli("models", "--url", server.grpc_url, admin_key=server.admin_key)
    models = [json.loads(line) for line in listed.stdout.splitlines()]
    assert {m["model"]: m["state"] for m in models}["feedback"] == "READY"

    (port,) = free_ports(1)
    refusals = {
        3: feedback_cli("health", "--url", f"127.0.0.1:{port}"),
        5: feedback_cli("classify", "a" * 20000, "--url", server.grpc_url),
        6: feedback_cli("classify", *TEXTS, "--timeout", "0.000001", "--retries", "0", "--url", server.grpc_url),
        2: feedback_cli("classify", "--input", str(tmp_path / "missing.csv"), "--output", str(tmp_path / "o.jsonl")),
        9: feedback_cli("classify", "hello", "--shm", "system", "--url", server.grpc_url),  # no admin key
    }
    try:
        cuda_module()
    except SharedMemoryError:  # no GPU here: shm="cuda" is a shared-memory error
        cuda = ("classify", "hi", "--shm", "cuda", "--url", server.grpc_url)
        refusals[7] = feedback_cli(*cuda, admin_key=server.admin_key)
    for code, done in refusals.items():
        assert done.returncode == code, (code, done.stdout, done.stderr)
        assert done.stderr.startswith("error:") and "Traceback" not in done.stderr, done.stderr


@pytest.mark.unit
def test_bulk_file_with_a_missing_column_is_refused_before_writing(tmp_path):
    source = tmp_path / "comments.jsonl"
    source.write_text('{"comment": "hi"}\n')
    target = tmp_path / "scored.jsonl"
    done = feedback_cli("classify", "--input", str(source), "--column", "text", "--output", str(target))
    assert done.returncode == 2 and "no column 'text'" in done.stderr
    assert not target.exists()


def kill_server(process: subprocess.Popen) -> None:
    """kill -9 the whole server (stubs included) and remove its stubs' regions, which a crashed server cannot.

    It also maps the clients' registered regions; those stay, they belong to the clients."""
    regions = stub_regions(process.pid)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    for region in regions:
        region.unlink(missing_ok=True)


def test_bulk_scoring_survives_a_server_crash_and_writes_each_row_once_in_order(tmp_path, reference):
    """With system shm, the hardest case: after the restart the client must register its regions again."""
    rows = [comment.text for comment in corpus.generate(10_000, seed=29)]
    source = tmp_path / "comments.csv"
    with source.open("w", newline="") as file:
        csv.writer(file).writerows([("id", "text"), *enumerate(rows)])
    target = tmp_path / "scored.jsonl"
    ports = Ports(*free_ports(3))
    log = tmp_path / "server.log"
    server = start(REPOSITORY, ports, log=log)
    bulk = None
    try:
        wait_ready(server, ports)
        args = [
            "--input",
            str(source),
            "--output",
            str(target),
            "--batch-size",
            "16",
            "--shm",
            "system",
            "--retries",
            "12",
        ]
        bulk = subprocess.Popen(
            [sys.executable, "-m", "client", "classify", *args, "--url", f"127.0.0.1:{ports.grpc}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        while not target.exists() or target.stat().st_size < 500_000:  # about a thousand rows in
            assert bulk.poll() is None, bulk.communicate()
            assert time.monotonic() < deadline, "the bulk run wrote too little in 120 s"
            time.sleep(0.05)
        kill_server(server)
        server = start(REPOSITORY, ports, log=log)
        stdout, stderr = bulk.communicate(timeout=300)
        assert bulk.returncode == 0, stderr
    finally:
        if bulk and bulk.poll() is None:
            bulk.kill()
        if server.poll() is None:
            regions = mapped_shm_regions(server.pid)
            left = stop(server) | {region for region in regions if region.exists()}
            assert not left, f"server left shared-memory regions: {sorted(map(str, left))}"
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert [line["row"] for line in lines] == list(range(10_000))
    assert [line["text"] for line in lines] == rows
    sample = slice(0, 10_000, 97)
    expected = reference.classify(rows[sample])
    assert [line["label"] for line in lines[sample]] == [label.decode() for label in expected["LABEL"][:, 0]]
    assert stdout == ""  # progress and the summary go to stderr


def test_stop_removes_the_stub_regions_a_killed_server_leaves(tmp_path):
    """A server that does not exit in time is killed and cannot remove its stubs' regions (nor can one that crashes
    while stopping, as 2.51 sometimes does): stop() removes the ones it saw mapped and says which."""
    ports = Ports(*free_ports(3))
    process = start(REPOSITORY, ports, log=tmp_path / "server.log")
    try:
        wait_ready(process, ports)
        mapped = stub_regions(process.pid)
        left = stop(process, timeout=0)  # SIGTERM, then SIGKILL at once: no time to clean up
    finally:
        stop(process)
    assert mapped and left, "the killed server should have left its stubs' regions for stop() to remove"
    assert left <= mapped and not [region for region in mapped if region.exists()]


def test_stop_kills_the_stubs_a_crashed_server_leaves(tmp_path):
    """tritonserver killed alone while its Python models load, as a crash kills it: its stubs then wait for good on
    a lock in the shared memory it held (before stop() killed them, 4 of 4 runs of this test left 1 to 3 running).
    stop() leaves no stub and no region."""
    ports = Ports(*free_ports(3))
    process = start(REPOSITORY, ports, log=tmp_path / "server.log")
    try:
        mapped, deadline = set(), time.monotonic() + 60
        while len(mapped) < 2 and time.monotonic() < deadline:  # two stubs starting: the models are loading
            mapped = stub_regions(process.pid)
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)  # the server alone, not its process group
        process.wait()
        time.sleep(1)  # a stub that is not stuck sees its parent gone within 300 ms and exits
    finally:
        stop(process)
    assert mapped, "the server should have mapped its stubs' regions"
    deadline = time.monotonic() + 5  # SIGKILL is delivered at once, but a process takes a moment to die
    while group_members(process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert group_members(process.pid) == [], "stubs of the dead server are still running"
    assert [region for region in mapped if region.exists()] == []
