"""The exporter's guarantees: nothing unchecked reaches a repository, and a user's checkpoint is served faithfully."""

import shutil

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient

import export.__main__ as export_cli
from export import artifacts, corpus
from export.artifacts import ParityError
from export.pretrained import export_pretrained
from tests.conftest import REPOSITORY, run_server


def test_failed_parity_check_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(export_cli, "fit", lambda model, *args, **kwargs: model.eval())  # skip training
    monkeypatch.setattr(artifacts, "PARITY_TOLERANCE", -1.0)  # no export can pass
    repo = tmp_path / "repo"
    with pytest.raises(ParityError):
        export_cli.export_default(repo, "small", seed=13)
    assert list(tmp_path.iterdir()) == [], "a failed export must leave no repository files and no staging folder"


def tiny_checkpoint(path, num_labels=6):
    """A Hugging Face BERT checkpoint with random weights, built locally: nothing is downloaded."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=700,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=num_labels,
    )
    BertForSequenceClassification(config).eval().save_pretrained(path)
    return path


def test_checkpoint_with_other_classes_is_refused(tmp_path):
    repo = tmp_path / "repo"
    with pytest.raises(ValueError, match="3 labels, the ensemble has 6"):
        export_pretrained(tiny_checkpoint(tmp_path / "ckpt", num_labels=3), "mine", repo)
    assert not (repo / "mine").exists()


def test_from_pretrained_is_served_as_a_new_model_and_as_a_new_member_version(tmp_path, reference):
    from transformers import BertForSequenceClassification

    checkpoint = tiny_checkpoint(tmp_path / "ckpt")
    repo = tmp_path / "repo"
    shutil.copytree(REPOSITORY, repo)  # resolves the model.py links into copies
    assert export_pretrained(checkpoint, "my_bert", repo) == 1
    assert export_pretrained(checkpoint, "transformer", repo) == 2  # replaces the ensemble's transformer member

    ids, mask = reference.tokenize([c.text for c in corpus.generate(16)])
    with torch.inference_mode():
        eager = BertForSequenceClassification.from_pretrained(checkpoint).eval()
        expected = eager(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.softmax(-1)

    for server in run_server(repo, tmp_path / "server.log"):
        triton = grpcclient.InferenceServerClient(server.grpc_url)
        inputs = [grpcclient.InferInput(n, list(ids.shape), "INT64") for n in ("INPUT_IDS", "ATTENTION_MASK")]
        inputs[0].set_data_from_numpy(ids)
        inputs[1].set_data_from_numpy(mask)
        alone = triton.infer("my_bert", inputs).as_numpy("PROBS")
        in_ensemble = triton.infer("feedback", inputs).as_numpy("MEMBER_PROBS")[:, 0]
        assert triton.get_model_metadata("transformer").versions == ["2"]
    np.testing.assert_allclose(alone, expected.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(in_ensemble, expected.numpy(), atol=1e-5, rtol=0)


def test_handwritten_evaluation_set_covers_every_class_and_measures_the_served_ensemble():
    from collections import Counter

    from export import evaluate
    from python_backend.inprocess import InProcessEnsemble

    texts, labels = evaluate.read(evaluate.HANDWRITTEN)
    classes = InProcessEnsemble(REPOSITORY).fuse.class_names
    assert len(texts) >= 60 and len(set(texts)) == len(texts)
    assert Counter(labels).keys() == set(classes) and min(Counter(labels).values()) >= 10
    scores = evaluate.accuracies(REPOSITORY)
    assert set(scores) == {"transformer", "textcnn", "ensemble"} and all(0 <= s <= 1 for s in scores.values())
