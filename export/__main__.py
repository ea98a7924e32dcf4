"""`python -m export`: train the members and write them into a Triton model repository.

python -m export [--repository DIR] [--profile accurate|fast] [--train-data FILE --text-column C --label-column L]
                 [--server HOST:PORT [--admin-key KEY]]
python -m export --from-pretrained CHECKPOINT_DIR --name MODEL [--repository DIR]

Without --train-data the members learn the built-in synthetic corpus (six topics); with it, the user's own labelled
rows and label set (CSV with a header row, or JSONL). With --server (the HTTP endpoint of the Triton serving the
repository) the ensembles switch from the old models to the new ones at once (release/switch.py).
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from tritonclient.utils import InferenceServerException

from export import datasets, evaluate, minilm, repository
from export.artifacts import export_onnx, export_onnx_int8, export_torchscript
from export.configs import MemberSpec, fuse_config, member_config
from export.members import (
    DEFAULT_PROFILE,
    MAX_POSITIONS,
    PROFILES,
    SMALL_TRANSFORMER,
    TEXTCNN_INSTANCES,
    RaggedInputs,
    TextCNN,
    TransformerClassifier,
)
from export.train import fit, fit_stacking, predict, seed_everything
from python_backend.fuse import stacking, weighted_mean
from python_backend.inprocess import RAGGED_INPUTS
from python_backend.text import encode
from release import canary, staging, switch
from release.live import Live
from release.parity import parity_samples
from release.validate import MAX_DROP, MIN_ACCURACY, Rejected, accuracy
from server.backends import precompile
from server.probe import CANARY_FILE

ONNX_TENSORS = (RAGGED_INPUTS, ("PROBS", "INPUT_ERRORS"))
# The libtorch backend's convention: <name>__<index>, in forward()'s argument and result order.
TORCHSCRIPT_TENSORS = (
    tuple(f"{name}__{index}" for index, name in enumerate(RAGGED_INPUTS)),
    ("PROBS__0", "INPUT_ERRORS__1"),
)


def go_live(stage: Path, repo: Path, changed: list[str], live: Live | None) -> None:
    """With the server that serves `repo`, switch its ensembles from the old models to the new ones at once
    (release/switch.py); without it, swap each model folder whole, one after another (a server polling the
    repository may then answer from new members under an old fuse for a moment)."""
    if live and changed:
        if not (reasons := switch.blockers(stage, repo, changed)):
            started = time.monotonic()
            switch.release_together(stage, repo, changed, live)
            took = time.monotonic() - started
            print(f"switched the ensembles to the new {', '.join(changed)} at once ({took:.1f} s)")
            return
        print(f"swapping models one by one, not together: {'; '.join(reasons)}")
    elif changed and (repo / CANARY_FILE).exists():  # an earlier export's models, which a polling server might mix
        print("no --server: a server polling the repository swaps the models one by one (see --help)")
    staging.publish(stage, repo, changed)
    for model in changed if live else []:
        live.load(model)  # explicit mode; poll mode loads them at its next poll


def export_default(repo: Path, profile_name: str, data: datasets.Dataset, seed: int, live: Live | None = None) -> None:
    started = time.monotonic()
    profile = PROFILES[profile_name]
    tok = minilm.tokenizer()
    (ids, mask), val, test = (
        encode(tok, np.array(part.texts, dtype=object)) for part in (data.train, data.validation, data.held_out)
    )
    vocab, classes = tok.get_vocab_size(), len(data.class_names)
    print(f"data: {data.describe()}; all-MiniLM-L6-v2's tokenizer, vocabulary {vocab}")

    seed_everything(seed)
    embeddings = minilm.word_embeddings()
    if profile.pretrained_encoder:
        transformer = minilm.SentenceClassifier(classes, profile.encoder_layers).fit_head(ids, mask, data.train.labels)
    else:
        transformer = fit(
            TransformerClassifier(embeddings, classes, SMALL_TRANSFORMER),
            ids,
            mask,
            data.train.labels,
            epochs=6,
            seed=seed,
        )
    textcnn = fit(TextCNN(embeddings, classes), ids, mask, data.train.labels, epochs=6, seed=seed)
    print(f"trained in {time.monotonic() - started:.1f} s")

    members = {"transformer": transformer, "textcnn": textcnn}
    stacked_val = np.stack([predict(m, *val) for m in members.values()], axis=1)
    stacked_test = np.stack([predict(m, *test) for m in members.values()], axis=1)
    coef, bias = fit_stacking(stacked_val, data.validation.labels)
    report = {name: stacked_test[:, i] for i, name in enumerate(members)}
    report["ensemble: weighted mean"] = weighted_mean(stacked_test, np.ones(len(members)))
    report["ensemble: stacking"] = stacking(stacked_test, coef, bias)
    print("held-out accuracy:")
    for name, probs in report.items():
        print(f"  {name:<24} {accuracy(probs, data.held_out.labels):.4f}")

    samples = parity_samples(*test)
    # Everything is built in `stage`, laid out as a repository, and checked there; only then does it go live.
    with staging.staging(repo) as stage:

        def member(name, platform, tensors, filename, write_artifact):
            (stage / name / "1").mkdir(parents=True)
            write_artifact(stage / name / "1" / filename)
            spec = MemberSpec(
                name,
                platform,
                *tensors,
                tuple(data.class_names),
                vocab,
                MAX_POSITIONS,
                profile.instances if name == "transformer" else TEXTCNN_INSTANCES,
                profile.threads,
                profile.queue_delay_us,
            )
            (stage / name / "config.pbtxt").write_text(member_config(spec))

        member(
            "transformer",
            "onnxruntime_onnx",
            ONNX_TENSORS,
            "model.onnx",
            lambda path: (
                export_onnx_int8(RaggedInputs(transformer, vocab, MAX_POSITIONS), path, samples, (ids, mask))
                if profile.int8
                else export_onnx(RaggedInputs(transformer, vocab, MAX_POSITIONS), path, samples)
            ),
        )
        member(
            "textcnn",
            "pytorch_libtorch",
            TORCHSCRIPT_TENSORS,
            "model.pt",
            lambda path: export_torchscript(RaggedInputs(textcnn, vocab, MAX_POSITIONS), path, samples),
        )
        repository.stage_committed(repo, stage)  # tokenizer and fuse get export's files in their staged copies
        tok.save(str(stage / "tokenizer" / "1" / "tokenizer.json"))
        fuse = fuse_config(list(members), data.class_names, vocab, MAX_POSITIONS)
        (stage / "fuse" / "config.pbtxt").write_text(fuse)
        np.savez(stage / "fuse" / "1" / "stacking.npz", coef=coef, bias=bias, members=np.array(list(members)))
        staging.write_held_out(stage, data.held_out.texts, [data.class_names[i] for i in data.held_out.labels])
        canary_labels = canary.write(stage)  # from the held-out file just written
        handwritten = evaluate.report(stage) if evaluate.covers(data.class_names) else []
        precompile(stage)  # or each Python model's stub writes its bytecode once live, and poll mode reloads it
        repo.mkdir(parents=True, exist_ok=True)
        with staging.locked(repo):  # no deploy in between
            changed = staging.changed(stage, repo, [*members, *repository.COMMITTED_MODELS])
            go_live(stage, repo, changed, live)
            for name in (staging.HELD_OUT, CANARY_FILE):  # last: with --server, once the new models serve
                (stage / name).replace(repo / name)
    print(
        f"wrote {', '.join(changed) or 'no changed model'}, {staging.HELD_OUT} and {CANARY_FILE} into {repo} "
        f"in {time.monotonic() - started:.1f} s"
    )
    print(f"{CANARY_FILE}: {len(canary_labels)} comments for the readiness probe ({', '.join(canary_labels)})")
    if handwritten:
        print("accuracy as served, on comments written by hand (export/evaluate.py):")
        print("\n".join(handwritten))


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repository", type=Path, default=repository.COMMITTED)
    parser.add_argument("--profile", choices=sorted(PROFILES), default=DEFAULT_PROFILE)
    parser.add_argument("--train-data", type=Path, metavar="FILE", help="labelled rows to train on (.csv or .jsonl)")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument(
        "--from-pretrained",
        type=Path,
        metavar="CHECKPOINT_DIR",
        help="a local Hugging Face sequence-classification checkpoint to add as a model",
    )
    parser.add_argument("--name", help="model name for --from-pretrained: a new model, or the next version of one")
    parser.add_argument(
        "--min-accuracy", type=float, default=MIN_ACCURACY, help="--from-pretrained of a member: the deploy gate"
    )
    parser.add_argument(
        "--max-drop", type=float, default=MAX_DROP, help="--from-pretrained of a member: the deploy gate"
    )
    parser.add_argument(
        "--server",
        metavar="HOST:PORT",
        help="Triton's HTTP endpoint serving --repository: switch its ensembles to the new models at once",
    )
    parser.add_argument(
        "--admin-key", default=os.environ.get("TRITON_ADMIN_KEY"), help="the server's admin key (repository API)"
    )
    args = parser.parse_args()
    if args.from_pretrained:
        if not args.name:
            parser.error("--from-pretrained needs --name")
        from export.pretrained import export_pretrained

        try:
            export_pretrained(args.from_pretrained, args.name, args.repository, args.min_accuracy, args.max_drop)
        except (ValueError, Rejected) as error:
            sys.exit(f"--from-pretrained {args.from_pretrained}: refused: {error}")
    else:
        try:
            data = (
                datasets.from_file(args.train_data, args.text_column, args.label_column, args.seed)
                if args.train_data
                else datasets.synthetic(args.seed)
            )
        except (OSError, ValueError) as error:
            parser.error(str(error))
        if not args.server:
            export_default(args.repository, args.profile, data, args.seed)
            return
        with Live(args.server, args.admin_key) as live:
            try:
                live.check()  # before training, not after
            except (InferenceServerException, OSError) as error:
                key = " (the server's admin key: --admin-key or TRITON_ADMIN_KEY)" if "restricted" in str(error) else ""
                parser.error(f"--server {args.server}: {error}{key}")
            try:
                export_default(args.repository, args.profile, data, args.seed, live)
            except (InferenceServerException, TimeoutError, OSError) as error:
                sys.exit(f"export did not go live: {error}")


if __name__ == "__main__":
    main()
