"""A user's own labelled data and label set, end to end: `python -m export --train-data` on a CSV with four classes
of its own, served, and the labels back through the client library and the CLI (issue #20)."""

import csv
import json
import random
import subprocess
import sys

import pytest

from client.feedback import FeedbackClient
from release.gates import served_class_names
from server import ROOT
from tests.conftest import run_server
from tests.test_client import feedback_cli

PHRASES = {  # an online shop's feedback: nothing like the built-in six topics
    "delivery": ["the parcel arrived late", "my package never showed up", "the courier lost my order"],
    "returns": ["the refund for my return", "sending the item back", "the return label"],
    "sizing": ["the shoes run small", "the jacket is a size too big", "the fit of the jeans"],
    "quality": ["the fabric tore after one wash", "the stitching came apart", "the zipper broke"],
}
OPENERS = ["", "honestly", "so", "well", "update:"]
CLOSERS = ["", "thanks", "please help", "not happy", "!"]


def rows(count: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    labels = [rng.choice(sorted(PHRASES)) for _ in range(count)]
    return [
        (" ".join(filter(None, [rng.choice(OPENERS), rng.choice(PHRASES[label]), rng.choice(CLOSERS)])), label)
        for label in labels
    ]


@pytest.fixture(scope="module")
def shop_repository(tmp_path_factory):
    folder = tmp_path_factory.mktemp("own-data")
    data = folder / "shop.csv"
    with open(data, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["id", "comment", "topic"])
        writer.writerows((number, text, label) for number, (text, label) in enumerate(rows(240, seed=1)))
    repository = folder / "repository"
    command = [
        sys.executable,
        "-m",
        "export",
        "--train-data",
        str(data),
        "--text-column",
        "comment",
        "--label-column",
        "topic",
        "--repository",
        str(repository),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "4 classes: delivery, quality, returns, sizing" in done.stdout
    return repository


def test_label_set_comes_from_the_data(shop_repository):
    assert served_class_names(shop_repository) == ["delivery", "quality", "returns", "sizing"]


def test_own_labels_come_back_through_the_library_and_the_cli(shop_repository, tmp_path):
    texts = ["my package never showed up, thanks", "the zipper broke !", "the shoes run small"]
    expected = ["delivery", "quality", "sizing"]
    with run_server(shop_repository, tmp_path / "server.log") as server:
        with FeedbackClient(server.grpc_url) as client:
            predictions = client.classify(texts)
        done = feedback_cli("classify", *texts, "--url", server.grpc_url, "--format", "jsonl")
    assert [p.label for p in predictions] == expected
    assert all(set(p.probabilities) == set(PHRASES) for p in predictions)
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["label"] for line in done.stdout.splitlines()] == expected


def test_unusable_training_data_is_refused_with_the_reason(tmp_path):
    data = tmp_path / "one-label.jsonl"
    data.write_text("".join(json.dumps({"text": text, "label": "delivery"}) + "\n" for text, _ in rows(20, seed=2)))
    command = [sys.executable, "-m", "export", "--train-data", str(data), "--repository", str(tmp_path / "repo")]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and "1 distinct label(s); a classifier needs at least 2" in done.stderr
    assert not (tmp_path / "repo").exists()
