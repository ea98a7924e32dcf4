"""The exporter's guarantees: nothing unchecked reaches a repository, and a user's checkpoint is served faithfully."""

import hashlib
import re
import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

import export.ensemble as default_export
from export import corpus, datasets
from export.ensemble import export_default
from export.pretrained import export_pretrained
from harness.steady_load import served_versions
from python_backend.inprocess import InProcessEnsemble
from python_backend.layout import latest_version, next_version
from release import parity, staging, switch
from release.deploy import register_tenant
from release.gates import MIN_ACCURACY, Rejected, served_class_names
from release.live import Live
from release.parity import ParityError
from tests.conftest import POLL_SECS, REPOSITORY, repository_copy, run_server
from tests.test_serving import TEXTS, text_tensor


def untrained(model, *args, **kwargs):
    """In place of training: new members with their initial weights, quickly."""
    return model.eval()


@pytest.mark.unit
def test_failed_parity_check_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(default_export, "fit", untrained)
    monkeypatch.setattr(parity, "PARITY_TOLERANCE", -1.0)  # no export can pass
    repo = tmp_path / "repo"
    with pytest.raises(ParityError):
        export_default(repo, "fast", datasets.synthetic(), seed=13)
    assert list(tmp_path.iterdir()) == [], "a failed export must leave no repository files and no staging folder"


@pytest.mark.unit
def test_a_model_folder_is_replaced_without_a_moment_missing(tmp_path):
    """A reader polling the live folder's config while it is replaced 2,000 times never misses it (renaming the old
    folder away and the new one in missed it about 5,000 times in this loop)."""
    live, staged = tmp_path / "repo" / "m", tmp_path / "stage" / "m"
    missing, done = [], threading.Event()

    def watch():
        while not done.is_set():
            if not (live / "config.pbtxt").exists():
                missing.append(1)

    live.mkdir(parents=True)
    (live / "config.pbtxt").write_text("first")
    reader = threading.Thread(target=watch)
    reader.start()
    try:
        for number in range(2000):
            staged.mkdir(parents=True)
            (staged / "config.pbtxt").write_text(str(number))
            staging.install_model(staged, live)
            shutil.rmtree(staged)  # the old folder, left where the new one was staged
    finally:
        done.set()
        reader.join()
    assert (live / "config.pbtxt").read_text() == "1999"
    assert len(missing) == 0


def model_digests(repo: Path) -> dict[str, str]:
    """Each model folder's files as one digest (compiled Python left out)."""
    digests = {}
    for folder in sorted(path for path in repo.iterdir() if path.is_dir()):
        digest = hashlib.sha256()
        for path in sorted(folder.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
        digests[folder.name] = digest.hexdigest()
    return digests


@pytest.mark.unit
def test_export_into_a_live_repository_swaps_whole_models(tmp_path, monkeypatch):
    """Watched before and after every swap: nothing live changed before the first one, every model folder is there
    at each step, each as it was or as export leaves it; an unchanged model is not touched."""
    repo = repository_copy(tmp_path / "repo")
    before, seen = model_digests(repo), []
    install = staging.install_model

    def watched(staged, destination):
        seen.append(model_digests(repo))
        install(staged, destination)
        seen.append(model_digests(repo))

    monkeypatch.setattr(staging, "install_model", watched)
    monkeypatch.setattr(default_export, "fit", untrained)
    export_default(repo, "fast", datasets.synthetic(), seed=14)
    after = model_digests(repo)
    assert seen and seen[0] == before, "export changed the live repository before its first swap"
    assert [m for m in before if after[m] != before[m]] == ["fuse", "textcnn", "transformer"]
    for state in seen:
        assert state.keys() == before.keys(), "a model folder was missing between two steps"
        assert [m for m in state if state[m] not in (before[m], after[m])] == [], "a model was half-written"


@pytest.mark.unit
def test_a_fresh_clones_model_folders_count_as_new(tmp_path):
    """A fresh clone has fuse/1/model.py and no fuse/config.pbtxt (export writes it): neither in the repository nor
    comparable, so export writes the model whole (CI's first run of `make test` failed reading that config)."""
    repo, stage = tmp_path / "repo", tmp_path / "stage"
    for folder in (repo / "fuse" / "1", stage / "fuse" / "1"):
        folder.mkdir(parents=True)
        (folder / "model.py").write_text("# committed\n")
    (stage / "fuse" / "config.pbtxt").write_text('name: "fuse"\n')
    assert not staging.in_repository(repo, "fuse")
    assert staging.changed(stage, repo, ["fuse"]) == ["fuse"]
    assert switch.blockers(stage, repo, ["fuse"]) == ["fuse is new"]


@pytest.mark.unit
def test_only_live_models_with_the_same_config_can_switch_together(tmp_path):
    """Triton applies one config to every loaded version: a model whose config changes cannot serve its old and new
    versions side by side through a switch, and a new model has no old version."""
    repo, stage = repository_copy(tmp_path / "repo"), tmp_path / "stage"
    for model in ("transformer", "fuse", "brand_new"):
        (stage / model / "1").mkdir(parents=True)
        source = repo / ("transformer" if model == "brand_new" else model) / "config.pbtxt"
        (stage / model / "config.pbtxt").write_text(source.read_text() + ("# changed\n" if model == "fuse" else ""))
    assert switch.blockers(stage, repo, ["transformer", "fuse", "brand_new"]) == [
        "fuse's config changed",
        "brand_new is new",
    ]


@contextmanager
def classifying(url: str, ensembles: list[str], texts: list[str]):
    """A client thread per entry of `ensembles`, each classifying `texts` through it in a loop until the block ends.
    Yields ([(ensemble, its PROBS answers)], errors)."""
    answers, errors, done = [(ensemble, []) for ensemble in ensembles], [], threading.Event()

    def classify(ensemble, answered):
        triton = grpcclient.InferenceServerClient(url)
        text = grpcclient.InferInput("TEXT", [len(texts), 1], "BYTES")
        text.set_data_from_numpy(text_tensor(texts))
        try:
            while not done.is_set():
                try:
                    answered.append(triton.infer(ensemble, [text]).as_numpy("PROBS"))
                except InferenceServerException as error:
                    errors.append(error)
        finally:
            triton.close()

    clients = [threading.Thread(target=classify, args=pair) for pair in answers]
    for client in clients:
        client.start()
    try:
        yield answers, errors
    finally:
        done.set()
        for client in clients:
            client.join()


def states(answered: list[np.ndarray], old: np.ndarray, new: np.ndarray | None = None) -> str:
    """Each answer as o (the old models'), n (the new ones'; if not given, the first answer that is not old) or m."""
    if new is None:
        new = next((a for a in answered if not np.allclose(a, old, atol=1e-5)), old)
    return "".join(
        "o" if np.allclose(a, old, atol=1e-5) else "n" if np.allclose(a, new, atol=1e-5) else "m" for a in answered
    )


def runs(which: str) -> str:
    return " ".join(f"{run[0]}x{len(run)}" for run in re.findall(r"o+|m+|n+", which))


def fast_repository_copy(target: Path, monkeypatch) -> Path:
    """A copy of the repository exported with the fast profile (untrained, in seconds): the switch tests replace its
    models with another export of the same profile, whose configs are the same (a change of profile changes them,
    and then export swaps models one by one, which test_only_live_models_with_the_same_config_can_switch_together
    covers)."""
    repo = repository_copy(target)
    monkeypatch.setattr(default_export, "fit", untrained)
    export_default(repo, "fast", datasets.synthetic(), seed=13)
    return repo


def with_tenant(repo: Path) -> None:
    """A tenant `acme` whose own transformer is the default one's copy, which export leaves alone: its ensembles
    (release/deploy.py's, as for any tenant) must switch all the same."""
    shutil.copytree(repo / "transformer", repo / "transformer__acme")
    config = repo / "transformer__acme" / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "transformer"', 'name: "transformer__acme"', 1))
    register_tenant(repo, "acme", "transformer")


@pytest.mark.parametrize("model_control", ["poll", "explicit"])
def test_export_to_a_serving_repository_switches_the_ensembles_at_once(tmp_path, monkeypatch, model_control):
    """Clients classify through feedback_text, and a tenant's copy of it, while export, given the server, replaces the
    members and fuse of the repository it serves: every request is answered, and each client's answers go from the
    old ensemble's to the new one's at once, never from new members under the old fuse. Afterwards the repository is
    as Triton users expect: ensembles on the latest versions, each model serving its new version alone."""
    repo = fast_repository_copy(tmp_path / "repo", monkeypatch)
    with_tenant(repo)
    ensembles = {name: (repo / name / "config.pbtxt").read_text() for name in ("feedback", "feedback_text__acme")}
    changed = {model: str(next_version(repo / model)) for model in ("transformer", "textcnn", "fuse")}
    texts = TEXTS[:8]
    old = InProcessEnsemble(repo).classify(texts)["PROBS"]
    monkeypatch.setattr(default_export, "fit", untrained)
    with run_server(repo, tmp_path / "server.log", model_control=model_control) as server:
        with classifying(server.grpc_url, ["feedback_text", "feedback_text", "feedback_text__acme"], texts) as (
            answers,
            errors,
        ):
            time.sleep(POLL_SECS)  # some answers from the old state
            with Live(server.http_url, server.admin_key) as live:
                export_default(repo, "fast", datasets.synthetic(), seed=14, live=live)
            time.sleep(2 * POLL_SECS)  # and some more from the new state
        with httpclient.InferenceServerClient(server.http_url) as client:
            served = {model: served_versions(client, model, server.admin_headers("http")) for model in changed}
    assert errors == []
    new = InProcessEnsemble(repo).classify(texts)["PROBS"]
    for ensemble, answered in answers:
        # The tenant's new answer has no in-process reference (old transformer, new textcnn and fuse).
        which = states(answered, old, new if ensemble == "feedback_text" else None)
        assert re.fullmatch("o+n+", which), f"{ensemble}: old (o), mixed (m), new (n) answers in order: {runs(which)}"
    assert served == {model: [version] for model, version in changed.items()}
    assert {name: (repo / name / "config.pbtxt").read_text() for name in ensembles} == ensembles


def test_an_interrupted_switch_puts_everything_back(tmp_path, monkeypatch):
    """Export stopped in the switch's third step, with feedback on the new models and feedback_text on its way: the
    ensembles go back to the old models, and then every file, with every request answered from the old models or the
    new ones, never a mix. The repository ends byte for byte as it was, each model serving its old version alone."""
    repo = fast_repository_copy(tmp_path / "repo", monkeypatch)
    with_tenant(repo)
    before = model_digests(repo)
    serving = {model: [latest_version(repo / model).name] for model in ("transformer", "textcnn", "fuse")}
    texts = TEXTS[:8]
    old = InProcessEnsemble(repo).classify(texts)["PROBS"]
    waits, wait = [], Live.wait

    def interrupted(live, what, condition, *args):
        waits.append(what)
        if (
            what.startswith("feedback_text serving versions")
            and sum(w.startswith("feedback_text ") for w in waits) == 2
        ):
            raise KeyboardInterrupt  # the second wait for feedback_text: the switch to the new versions
        return wait(live, what, condition, *args)

    monkeypatch.setattr(default_export, "fit", untrained)
    monkeypatch.setattr(Live, "wait", interrupted)
    with run_server(repo, tmp_path / "server.log") as server:
        with classifying(server.grpc_url, ["feedback_text", "feedback_text__acme"], texts) as (answers, errors):
            with Live(server.http_url, server.admin_key) as live, pytest.raises(KeyboardInterrupt):
                export_default(repo, "fast", datasets.synthetic(), seed=14, live=live)
            time.sleep(3 * POLL_SECS)  # the files put back are polled
        with httpclient.InferenceServerClient(server.http_url) as client:
            served = {model: served_versions(client, model, server.admin_headers("http")) for model in serving}
    assert errors == []
    for ensemble, answered in answers:
        which = states(answered, old)
        assert re.fullmatch("o+(n+o+)?", which), f"{ensemble}: old (o), mixed (m), new (n) in order: {runs(which)}"
    assert model_digests(repo) == before
    assert served == serving
    assert not list(tmp_path.glob(".staging-*"))


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
        "member below the accuracy gate": rf"held-out accuracy 0\.\d+ is below the threshold {MIN_ACCURACY}",
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

    ids, mask, _ = reference.tokenize([c.text for c in corpus.generate(16)])
    expected = eager_probabilities(checkpoint, ids, mask, served)
    with run_server(repo, tmp_path / "server.log") as server:
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
    with run_server(repo, tmp_path / "server.log") as server:
        triton = grpcclient.InferenceServerClient(server.grpc_url)
        text = grpcclient.InferInput("TEXT", [len(texts), 1], "BYTES")
        text.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=object))
        probs = triton.infer("my_bert_text", [text]).as_numpy("PROBS")
    np.testing.assert_allclose(probs, expected, atol=1e-5, rtol=0)
