"""Export the default ensemble: train the members, build a staged repository beside the live one and check it there,
then put what changed live (release/switch.py with a server, folder by folder without one).

Progress goes to this module's logger; `python -m export` shows it.
"""

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from conventions import CANARY_FILE
from export import committed, datasets, evaluate, minilm
from export.artifacts import export_onnx, export_onnx_int8, export_torchscript
from export.configs import MemberSpec, fuse_config, member_config
from export.features import expose_features
from export.members import (
    MAX_POSITIONS,
    PROFILES,
    SMALL_TRANSFORMER,
    TEXTCNN_INSTANCES,
    Profile,
    RaggedInputs,
    TextCNN,
    TransformerClassifier,
)
from export.train import fit, fit_stacking, predict, seed_everything
from python_backend.fuse import stacking, weighted_mean
from python_backend.inprocess import RAGGED_INPUTS
from python_backend.text import encode
from release import canary, staging, switch
from release.gates import accuracy
from release.live import Live
from release.parity import parity_samples
from server.backends import precompile

log = logging.getLogger(__name__)

ONNX_TENSORS = (RAGGED_INPUTS, ("PROBS", "INPUT_ERRORS"))
# The libtorch backend's convention: <name>__<index>, in forward()'s argument and result order.
TORCHSCRIPT_TENSORS = (
    tuple(f"{name}__{index}" for index, name in enumerate(RAGGED_INPUTS)),
    ("PROBS__0", "INPUT_ERRORS__1"),
)


@dataclass
class Trained:
    """What training produced: the members, the stacking combiner, and what staging needs to write them."""

    tokenizer: Tokenizer
    data: datasets.Dataset
    profile: Profile
    members: dict  # name -> torch module
    coef: np.ndarray
    bias: np.ndarray
    train: tuple[np.ndarray, np.ndarray]  # ids, mask: int8 calibration
    parity_samples: list


def export_default(repo: Path, profile_name: str, data: datasets.Dataset, seed: int, live: Live | None = None) -> None:
    started = time.monotonic()
    trained = train(PROFILES[profile_name], data, seed)
    with staging.staging(repo) as stage:  # built and checked beside the repository; only then does it go live
        stage_members(stage, trained)
        stage_ensemble(repo, stage, trained)
        labels = canary.write(stage)  # from the held-out file just written
        handwritten = evaluate.report(stage) if evaluate.covers(data.class_names) else []
        precompile(stage)  # or each Python model's stub writes its bytecode once live, and poll mode reloads it
        changed = publish(stage, repo, list(trained.members), live)
    log.info(
        "wrote %s, %s and %s into %s in %.1f s",
        ", ".join(changed) or "no changed model",
        staging.HELD_OUT,
        CANARY_FILE,
        repo,
        time.monotonic() - started,
    )
    log.info("%s: %d comments for the readiness probe (%s)", CANARY_FILE, len(labels), ", ".join(labels))
    if handwritten:
        log.info("accuracy as served, on comments written by hand (export/evaluate.py):\n%s", "\n".join(handwritten))


def train(profile: Profile, data: datasets.Dataset, seed: int) -> Trained:
    """Both members on the training split, and the stacking combiner on the validation split; logs held-out
    accuracy of each member and of both combiners."""
    started = time.monotonic()
    tok = minilm.tokenizer()
    (ids, mask), val, test = (
        encode(tok, np.array(part.texts, dtype=object)) for part in (data.train, data.validation, data.held_out)
    )
    classes = len(data.class_names)
    log.info("data: %s; all-MiniLM-L6-v2's tokenizer, vocabulary %d", data.describe(), tok.get_vocab_size())
    seed_everything(seed)
    embeddings = minilm.word_embeddings()
    if profile.pretrained_encoder:
        transformer = minilm.SentenceClassifier(classes, profile.encoder_layers).fit_head(ids, mask, data.train.labels)
    else:
        small = TransformerClassifier(embeddings, classes, SMALL_TRANSFORMER)
        transformer = fit(small, ids, mask, data.train.labels, epochs=6, seed=seed)
    textcnn = fit(TextCNN(embeddings, classes), ids, mask, data.train.labels, epochs=6, seed=seed)
    log.info("trained in %.1f s", time.monotonic() - started)

    members = {"transformer": transformer, "textcnn": textcnn}
    stacked_val = np.stack([predict(m, *val) for m in members.values()], axis=1)
    stacked_test = np.stack([predict(m, *test) for m in members.values()], axis=1)
    coef, bias = fit_stacking(stacked_val, data.validation.labels)
    report = {name: stacked_test[:, i] for i, name in enumerate(members)}
    report["ensemble: weighted mean"] = weighted_mean(stacked_test, np.ones(len(members)))
    report["ensemble: stacking"] = stacking(stacked_test, coef, bias)
    lines = [f"  {name:<24} {accuracy(probs, data.held_out.labels):.4f}" for name, probs in report.items()]
    log.info("held-out accuracy:\n%s", "\n".join(lines))
    return Trained(tok, data, profile, members, coef, bias, (ids, mask), parity_samples(*test))


def stage_members(stage: Path, trained: Trained) -> None:
    """Each member's artifact (checked for parity as it is written) and config, laid out as in a repository."""
    vocab, profile = trained.tokenizer.get_vocab_size(), trained.profile
    transformer = RaggedInputs(trained.members["transformer"], vocab, MAX_POSITIONS)
    textcnn = RaggedInputs(trained.members["textcnn"], vocab, MAX_POSITIONS)
    samples = trained.parity_samples
    for name, platform, tensors, filename, write_artifact in (
        (
            "transformer",
            "onnxruntime_onnx",
            ONNX_TENSORS,
            "model.onnx",
            lambda path: (
                export_onnx_int8(transformer, path, samples, trained.train)
                if profile.int8
                else export_onnx(transformer, path, samples)
            ),
        ),
        (
            "textcnn",
            "pytorch_libtorch",
            TORCHSCRIPT_TENSORS,
            "model.pt",
            lambda path: export_torchscript(textcnn, path, samples),
        ),
    ):
        (stage / name / "1").mkdir(parents=True)
        write_artifact(stage / name / "1" / filename)
        # The transformer's sentence features, for the tenant heads of `feedback_tenant` (export/features.py).
        features = expose_features(stage / name / "1" / filename) if name == "transformer" else 0
        spec = MemberSpec(
            name,
            platform,
            *tensors,
            tuple(trained.data.class_names),
            vocab,
            MAX_POSITIONS,
            profile.instances if name == "transformer" else TEXTCNN_INSTANCES,
            profile.threads,
            profile.queue_delay_us,
            features,
        )
        (stage / name / "config.pbtxt").write_text(member_config(spec))


def stage_ensemble(repo: Path, stage: Path, trained: Trained) -> None:
    """The committed models (tokenizer, fuse, ensembles) with export's files in their staged copies: the tokenizer,
    the fuse config and stacking weights; and the held-out comments the gates and canaries read."""
    data, members = trained.data, list(trained.members)
    committed.stage(repo, stage)
    trained.tokenizer.save(str(stage / "tokenizer" / "1" / "tokenizer.json"))
    fuse = fuse_config(members, data.class_names, trained.tokenizer.get_vocab_size(), MAX_POSITIONS)
    (stage / "fuse" / "config.pbtxt").write_text(fuse)
    np.savez(stage / "fuse" / "1" / "stacking.npz", coef=trained.coef, bias=trained.bias, members=np.array(members))
    staging.write_held_out(stage, data.held_out.texts, [data.class_names[i] for i in data.held_out.labels])


def publish(stage: Path, repo: Path, members: list[str], live: Live | None) -> list[str]:
    """Put the staged models that differ from the repository's live, then the held-out file and canary (last: with
    a server, once the new models serve). Returns the models that changed."""
    repo.mkdir(parents=True, exist_ok=True)
    with staging.locked(repo):  # no deploy in between
        changed = staging.changed(stage, repo, [*members, *committed.MODELS])
        go_live(stage, repo, changed, live)
        for name in (staging.HELD_OUT, CANARY_FILE):
            (stage / name).replace(repo / name)
    return changed


def go_live(stage: Path, repo: Path, changed: list[str], live: Live | None) -> None:
    """With the server that serves `repo`, switch its ensembles from the old models to the new ones at once
    (release/switch.py); without it, swap each model folder whole, one after another (a server polling the
    repository may then answer from new members under an old fuse for a moment)."""
    if live and changed:
        if not (reasons := switch.blockers(stage, repo, changed)):
            started = time.monotonic()
            switch.release_together(stage, repo, changed, live)
            log.info(
                "switched the ensembles to the new %s at once (%.1f s)", ", ".join(changed), time.monotonic() - started
            )
            return
        log.info("swapping models one by one, not together: %s", "; ".join(reasons))
    elif changed and (repo / CANARY_FILE).exists():  # an earlier export's models, which a polling server might mix
        log.info("no --server: a server polling the repository swaps the models one by one (see --help)")
    staging.publish(stage, repo, changed)
    for model in changed if live else []:
        live.load(model)  # explicit mode; poll mode loads them at its next poll
