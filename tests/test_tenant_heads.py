"""Tenant heads: a customer's own label set as a small head over the shared members (`feedback_tenant`)."""

import csv
import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from client import predictions
from client.bulk import score_file
from client.errors import InvalidInput
from client.feedback import FeedbackClient
from harness.triton_stats import heads_gauges, metrics_text
from python_backend.errors import BadRequest
from python_backend.heads import HeadCache, head_path, request_tenant, write_head
from python_backend.inprocess import InProcessEnsemble
from python_backend.text import rows_of
from release import heads
from release.gates import Rejected
from server import probe
from tests.conftest import REPOSITORY, run_server
from tests.test_deploy import copy_repository

# Two customers whose label sets are not the served one: each groups the default classes its own way.
LABEL_SETS = {
    "acme": {"price": "money", "billing": "money", "support": "help", "onboarding": "help"}
    | {"usability": "product", "performance": "product"},
    "globex": {"price": "cost", "billing": "invoice", "support": "service", "onboarding": "service"}
    | {"usability": "app", "performance": "app"},
}
LONG = "the app is slow to open every morning and " * 60  # several windows: its features are their mean
rng = np.random.default_rng(0)


def tenant_rows(tenant: str, rows: int = 240) -> heads.Rows:
    with open(REPOSITORY / "held_out.csv", newline="") as file:
        records = list(csv.DictReader(file))[:rows]
    return heads.Rows([r["text"] for r in records], [LABEL_SETS[tenant][r["label"]] for r in records])


def declared(tenant: str) -> list[str]:
    return sorted(set(LABEL_SETS[tenant].values()))


@pytest.mark.unit
def test_the_cache_reads_lazily_follows_the_file_and_drops_the_least_recently_used(tmp_path):
    width, features = 8, rng.random((3, 8)).astype(np.float32)
    for index, tenant in enumerate(("a", "b", "c")):
        write_head(
            head_path(tmp_path, tenant),
            rng.random((width, 3 + index)),
            np.zeros(3 + index),
            list("xyzwv"[: 3 + index]),
            "e",
        )
    one_head = HeadCache(tmp_path, 2**20).head("a").nbytes
    cache = HeadCache(tmp_path, budget_bytes=2 * one_head + 64)  # two heads of three classes, not three
    answers = {t: cache.answer([(features, t)])[0] for t in ("a", "b", "c")}
    assert [len(answers[t][0][0]) for t in "abc"] == [3, 4, 5]  # each in its own label set
    assert answers["c"][2][0].tolist() == [b"x", b"y", b"z", b"w", b"v"]
    assert "a" not in cache.heads and cache.loads == 3 and cache.nbytes <= cache.budget  # `a` was dropped
    again = cache.answer([(features, "a")])[0]
    assert cache.loads == 4
    np.testing.assert_array_equal(again[0], answers["a"][0])  # read again, the same answers
    write_head(head_path(tmp_path, "a"), np.zeros((width, 2)), np.array([0.0, 1.0]), ["p", "q"], "e")
    replaced = cache.answer([(features, "a")])[0]
    assert replaced[1].ravel().tolist() == [b"q"] * 3  # the new file, without a restart
    head_path(tmp_path, "a").unlink()
    (gone,) = cache.answer([(features, "a")])
    assert isinstance(gone, BadRequest) and "no head is deployed" in str(gone)


@pytest.mark.unit
@pytest.mark.parametrize(
    "tenants, error",
    [
        (np.array([[b"a"], [b"b"]], dtype=object), "one tenant per request"),
        (np.array([[b"../x"], [b"../x"]], dtype=object), "expected 1-32 lowercase"),
    ],
)
def test_a_request_names_one_wellformed_tenant(tenants, error):
    with pytest.raises(BadRequest, match=error):
        request_tenant(tenants)


@pytest.mark.unit
def test_the_tenant_travels_with_each_window_and_the_fuse_step_answers_with_its_head(tmp_path):
    windows = np.array([[1], [3], [3], [3], [1]], np.int32)  # three comments, the second read as 3 windows
    rows = rows_of(np.array([[b"a"], [b"a"], [b"a"]], dtype=object), windows)
    assert rows.shape == (5, 1)
    with pytest.raises(BadRequest, match="one per comment"):
        rows_of(np.array([[b"a"], [b"a"]], dtype=object), windows)
    write_head(head_path(tmp_path, "a"), np.eye(4, 2), np.zeros(2), ["x", "y"], "e")
    default = [np.zeros((3, 6), np.float32), np.array([[b"l"]] * 3, dtype=object)] + [np.zeros((3, 1))] * 2
    features = np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0]], np.float32)
    answered = HeadCache(tmp_path, 2**20).with_tenant_answers(
        [[*default, features], [*default, features], default, ValueError("kept")],
        [rows[:3], None, rows[:3], rows[:3]],
    )
    assert len(answered[0]) == 7 and answered[0][5].ravel().tolist() == [b"y", b"x", b"y"]
    assert len(answered[1]) == 4  # no tenant: the default answer, without the features
    assert isinstance(answered[2], BadRequest) and "needs the transformer's `embedding`" in str(answered[2])
    assert isinstance(answered[3], ValueError)


@pytest.mark.unit
@pytest.mark.parametrize(
    "name, content, error",
    [
        ("rows.csv", "text,label\nthe parcel was late,shipping\nno label here,\n", r"rows.csv:3: needs a non-empty"),
        ("rows.jsonl", '{"text": "late", "label": "shipping"}\n["a list"]\n', r"rows.jsonl:2: expected an object"),
        ("rows.jsonl", '{"text": 5, "label": "shipping"}\n', r"rows.jsonl:1: needs a non-empty 'text'"),
    ],
)
def test_a_tenants_file_with_a_bad_row_is_refused_by_line(tmp_path, name, content, error):
    (tmp_path / name).write_text(content)
    with pytest.raises(Rejected, match=error):
        heads.read_rows(tmp_path / name)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A copy whose fuse step holds one head at a time (a budget under one head's size): every request of
    another tenant than the last evicts a head, which the next request reads again."""
    copy = copy_repository(tmp_path_factory)
    config = copy / "fuse" / "config.pbtxt"
    config.write_text(re.sub(r'("head_memory_mb" value: \{ string_value: )"[^"]+"', r'\1"0.001"', config.read_text()))
    return copy


@pytest.fixture(scope="module")
def server(repo, tmp_path_factory):
    with run_server(repo, tmp_path_factory.mktemp("heads") / "server.log") as running:
        for tenant in LABEL_SETS:
            heads.put(repo, tenant, tenant_rows(tenant), declared(tenant), replace=False, server=running.http_url)
        yield running


def served(server, texts: list[str], tenant: str) -> dict:
    with FeedbackClient(server.grpc_url) as client:
        return client.infer(
            predictions.TENANT_MODEL, predictions.tenant_inputs(texts, tenant), predictions.TENANT_OUTPUTS
        )


def test_two_tenants_answer_in_their_own_labels_as_in_process(server, repo):
    texts = [*tenant_rows("acme", 300).texts[240:], LONG]  # rows no head was trained on, and a long comment
    reference, cache = InProcessEnsemble(repo), HeadCache(repo, 2**30)
    parts = {(tenant, i): texts[i::3] for tenant in LABEL_SETS for i in range(3)}
    with ThreadPoolExecutor(8) as pool:  # both tenants and the default ensemble at once: batched together
        answers = {key: pool.submit(served, server, part, key[0]) for key, part in parts.items()}
        untagged = [pool.submit(served_default, server, texts) for _ in range(2)]
    for (tenant, _), future in answers.items():
        got, expected = future.result(), reference.classify_tenant(parts[tenant, _], tenant, cache)
        np.testing.assert_allclose(got["TENANT_PROBS"], expected["TENANT_PROBS"], atol=1e-5)
        assert (got["TENANT_LABEL"] == expected["TENANT_LABEL"]).all()
        assert got["TENANT_CLASSES"][0].tolist() == [name.encode() for name in declared(tenant)]
        np.testing.assert_allclose(got["PROBS"], expected["PROBS"], atol=1e-5)  # the default answer beside it
    assert all(len(future.result()) == len(texts) for future in untagged)
    with FeedbackClient(server.grpc_url) as client:
        (long_answer,) = client.classify_tenant([LONG], "globex")
    assert long_answer.default.windows > 1 and long_answer.label in declared("globex")
    assert set(long_answer.probabilities) == set(declared("globex"))


def test_the_probe_checks_the_newest_heads_labels(server, repo):
    """`tenant add` writes a canary of the head's confident held-out rows; the probe sends the newest to
    `feedback_tenant`. A head that answers in a shifted label order must fail it; put back, it passes."""
    url = f"http://{server.http_url}"
    checks = {check.model: check for check in probe.probe(url, repository=repo)}
    assert all(check.ok for check in checks.values()), checks
    (name,) = [name for name in checks if name.startswith("feedback_tenant (tenant ")]
    tenant = name.removeprefix("feedback_tenant (tenant ").removesuffix(")")
    canary = json.loads((repo / f"canary__head__{tenant}.json").read_text())
    assert set(canary["labels"]) == set(declared(tenant))  # a row of each class
    path = head_path(repo, tenant)
    good = path.read_bytes()
    with np.load(path) as stored:
        coef, bias, names, encoder = (stored[key] for key in ("coef", "bias", "class_names", "encoder"))
    try:
        write_head(path, coef, bias, np.roll(names, 1).tolist(), str(encoder))
        wrong = {check.model: check for check in probe.probe(url, repository=repo)}[name]
        assert not wrong.ok and "the canary comments' labels are" in wrong.error, wrong
    finally:
        partial = path.with_name(".restore")
        partial.write_bytes(good)
        partial.replace(path)
    assert all(check.ok for check in probe.probe(url, repository=repo))


def served_default(server, texts: list[str]) -> list:
    with FeedbackClient(server.grpc_url) as client:
        return client.classify(texts)


def test_a_head_that_fails_the_gates_is_refused_and_the_old_one_keeps_serving(server, repo):
    texts = tenant_rows("acme").texts[:20]
    before = served(server, texts, "acme")
    wrong_labels = heads.Rows(texts, ["money"] * 10 + ["refunds"] * 10)
    with pytest.raises(Rejected, match="undeclared"):
        heads.put(repo, "acme", wrong_labels, declared("acme"), replace=True, server=server.http_url)
    with pytest.raises(Rejected, match="held-out accuracy"):
        heads.put(repo, "acme", tenant_rows("acme"), declared("acme"), replace=True, min_accuracy=1.01)
    with pytest.raises(Rejected, match="has a head already"):
        heads.put(repo, "acme", tenant_rows("acme"), declared("acme"), replace=False)
    files = {path: path.read_bytes() for path in repo.glob("*acme*")}  # the head and its canary
    assert len(files) == 2, sorted(files)
    with pytest.raises(Rejected, match="could not check the head: .*cannot connect"):
        heads.put(repo, "acme", tenant_rows("acme"), declared("acme"), replace=True, server="127.0.0.1:1")
    assert {path: path.read_bytes() for path in repo.glob("*acme*")} == files
    after = served(server, texts, "acme")
    np.testing.assert_array_equal(after["TENANT_PROBS"], before["TENANT_PROBS"])


def test_an_evicted_head_is_read_again_with_the_same_answers(server):
    texts = tenant_rows("acme").texts[:8]
    reads = heads_gauges(server.ports.metrics).get("reads", 0)
    first = served(server, texts, "acme")
    served(server, texts, "globex")  # evicts acme's head: the budget holds one
    again = served(server, texts, "acme")
    gauges = heads_gauges(server.ports.metrics)
    assert gauges["held"] == 1 and gauges["reads"] >= reads + 2, gauges
    np.testing.assert_array_equal(again["TENANT_PROBS"], first["TENANT_PROBS"])


def test_unknown_or_malformed_tenants_get_a_clear_error_and_the_server_keeps_serving(server, repo):
    for tenant, message in (("initech", "no head is deployed"), ("Bad/Id", "expected 1-32 lowercase")):
        with pytest.raises(InvalidInput, match=re.escape(message)):
            served(server, ["the invoice was wrong"], tenant)
    assert served(server, ["the invoice was wrong"], "acme")["TENANT_LABEL"].shape == (1, 1)


def test_a_removed_tenant_is_refused_and_one_added_answers_without_a_reload(server, repo, tmp_path):
    rows = tenant_rows("globex")
    data = tmp_path / "umbrella.csv"
    with open(data, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["comment", "topic"])
        writer.writerows(zip(rows.texts, rows.labels, strict=True))
    args = ["--train-data", str(data), "--labels", ",".join(declared("globex"))]
    parsed = cli(repo, server, "add", "umbrella", *args, "--text-column", "comment", "--label-column", "topic")
    heads.run(parsed)
    assert served(server, ["the invoice was wrong"], "umbrella")["TENANT_LABEL"].shape == (1, 1)
    assert any(line.startswith("umbrella  4 classes") for line in heads.run(cli(repo, server, "list")))
    heads.run(cli(repo, server, "remove", "umbrella"))
    with pytest.raises(InvalidInput, match="no head is deployed"):
        served(server, ["the invoice was wrong"], "umbrella")
    metrics = metrics_text(server.ports.metrics)
    assert re.search(r'feedback_tenant_comments_total\{label="\w+",tenant="acme"\} \d+', metrics)


def cli(repo: Path, server, *words: str):
    """`python -m release.deploy --repository REPO --server URL tenant WORDS...` as parsed arguments."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--repository", type=Path)
    parser.add_argument("--server")
    heads.add_commands(parser.add_subparsers(dest="command").add_parser("tenant"))
    return parser.parse_args(["--repository", str(repo), "--server", server.http_url, "tenant", *words])


def test_the_cli_and_a_bulk_file_answer_in_the_tenants_labels(server, tmp_path):
    command = [sys.executable, "-m", "client", "classify", "--url", server.grpc_url, "--format", "jsonl"]
    shown = subprocess.run([*command, "--tenant", "globex", "the invoice was wrong"], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    (line,) = [json.loads(text) for text in shown.stdout.splitlines()]
    assert line["tenant"] == "globex" and line["label"] in declared("globex")
    assert set(line["probabilities"]) == set(declared("globex")) and "label" in line["default"]
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("".join(json.dumps({"text": text}) + "\n" for text in tenant_rows("acme", 30).texts))
    with FeedbackClient(server.grpc_url) as client:
        summary = score_file(client, source, "text", target, batch_size=8, tenant="acme")
    lines = [json.loads(text) for text in target.read_text().splitlines()]
    assert summary.failed == 0 and len(lines) == 30
    assert {line["label"] for line in lines} <= set(declared("acme"))
