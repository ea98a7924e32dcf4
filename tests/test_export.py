"""The exporter's guarantees: nothing unchecked reaches a repository, and a user's checkpoint is served faithfully."""

import shutil

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient

import export.__main__ as export_cli
from export import artifacts, corpus, datasets
from export.artifacts import ParityError
from export.pretrained import export_pretrained
from export.validate import Rejected, served_class_names
from tests.conftest import REPOSITORY, repository_copy, run_server


def test_failed_parity_check_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(export_cli, "fit", lambda model, *args, **kwargs: model.eval())  # skip training
    monkeypatch.setattr(artifacts, "PARITY_TOLERANCE", -1.0)  # no export can pass
    repo = tmp_path / "repo"
    with pytest.raises(ParityError):
        export_cli.export_default(repo, "small", datasets.synthetic(), seed=13)
    assert list(tmp_path.iterdir()) == [], "a failed export must leave no repository files and no staging folder"


def tiny_checkpoint(path, labels, tokenizer: str):
    """A Hugging Face BERT checkpoint with random weights, built locally: nothing is downloaded.

    tokenizer: "shared" (the repository's tokenizer.json), "own" (a small WordPiece vocab.txt that transformers
    converts, nothing like the repository's) or "none".
    """
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    path.mkdir(parents=True)
    if tokenizer == "shared":
        shutil.copy(REPOSITORY / "tokenizer" / "1" / "tokenizer.json", path / "tokenizer.json")
        vocab_size = 30522
    else:
        words = sorted({word for text in datasets.synthetic().train.texts[:500] for word in text.lower().split()})
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
        (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
        if tokenizer == "own":
            BertTokenizer(str(path / "vocab.txt")).save_pretrained(path)
        else:
            (path / "vocab.txt").unlink()
        vocab_size = len(vocab)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    BertForSequenceClassification(config).eval().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def served():
    return served_class_names(REPOSITORY)


@pytest.mark.parametrize(
    "case", ["other labels", "no tokenizer", "own tokenizer as a member", "member below the accuracy gate"]
)
def test_checkpoint_that_cannot_be_served_faithfully_is_refused(tmp_path, served, case):
    labels, tokenizer, name = {
        "other labels": (served[:3], "shared", "mine"),
        "no tokenizer": (served, "none", "mine"),
        "own tokenizer as a member": (served, "own", "transformer"),
        "member below the accuracy gate": (served, "shared", "transformer"),  # random weights: about 1 in 6
    }[case]
    reason = {
        "other labels": r"are not the served label set .* \(missing \[.*\], unknown \[\]\)",
        "no tokenizer": "no tokenizer",
        "own tokenizer as a member": "its tokenizer is not the repository's, and 'transformer' is an ensemble member",
        "member below the accuracy gate": r"held-out accuracy 0\.\d+ is below the threshold 0\.9",
    }[case]
    repo = repository_copy(tmp_path / "repo")
    before = sorted(repo.rglob("*"))
    with pytest.raises((ValueError, Rejected), match=reason):
        export_pretrained(tiny_checkpoint(tmp_path / "ckpt", labels, tokenizer), name, repo)
    assert sorted(repo.rglob("*")) == before


def eager_probabilities(checkpoint, ids, mask, served):
    """transformers in-process, columns put in the served order by label name."""
    from transformers import BertForSequenceClassification

    with torch.inference_mode():
        eager = BertForSequenceClassification.from_pretrained(checkpoint).eval()
        probs = eager(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.softmax(-1)
    return probs.numpy()[:, [eager.config.label2id[name] for name in served]]


def test_from_pretrained_is_served_as_a_new_model_and_as_a_new_member_version(tmp_path, reference, served):
    # The checkpoint names the served classes in another order: its columns must be mapped, not taken as they are.
    checkpoint = tiny_checkpoint(tmp_path / "ckpt", served[::-1], "shared")
    repo = repository_copy(tmp_path / "repo")
    assert export_pretrained(checkpoint, "my_bert", repo) == 1
    # The next version of the ensemble's transformer member, through deploy's checks; random weights need the
    # accuracy gate opened explicitly.
    assert export_pretrained(checkpoint, "transformer", repo, min_accuracy=0.0, max_drop=1.0) == 2

    ids, mask = reference.tokenize([c.text for c in corpus.generate(16)])
    expected = eager_probabilities(checkpoint, ids, mask, served)
    for server in run_server(repo, tmp_path / "server.log"):
        triton = grpcclient.InferenceServerClient(server.grpc_url)
        inputs = [grpcclient.InferInput(n, list(ids.shape), "INT64") for n in ("INPUT_IDS", "ATTENTION_MASK")]
        inputs[0].set_data_from_numpy(ids)
        inputs[1].set_data_from_numpy(mask)
        alone = triton.infer("my_bert", inputs).as_numpy("PROBS")
        in_ensemble = triton.infer("feedback", inputs).as_numpy("MEMBER_PROBS")[:, 0]
        assert triton.get_model_metadata("transformer").versions == ["2"]
    np.testing.assert_allclose(alone, expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(in_ensemble, expected, atol=1e-5, rtol=0)


def test_checkpoint_with_its_own_tokenizer_is_served_through_it(tmp_path, served):
    from transformers import AutoTokenizer

    checkpoint = tiny_checkpoint(tmp_path / "ckpt", served, "own")
    repo = repository_copy(tmp_path / "repo")
    assert export_pretrained(checkpoint, "my_bert", repo) == 1

    texts = [c.text for c in corpus.generate(16, seed=3)] + ["Zebra quokka!", ""]
    encoded = AutoTokenizer.from_pretrained(checkpoint)(
        texts, padding="max_length", max_length=128, truncation=True, return_tensors="np"
    )
    expected = eager_probabilities(checkpoint, encoded["input_ids"], encoded["attention_mask"], served)
    for server in run_server(repo, tmp_path / "server.log"):
        triton = grpcclient.InferenceServerClient(server.grpc_url)
        text = grpcclient.InferInput("TEXT", [len(texts), 1], "BYTES")
        text.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=object))
        probs = triton.infer("my_bert_text", [text]).as_numpy("PROBS")
    np.testing.assert_allclose(probs, expected, atol=1e-5, rtol=0)
