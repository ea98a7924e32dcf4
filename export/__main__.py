"""`python -m export`: train the members on the shipped corpus and write them into a Triton model repository.

python -m export [--repository DIR] [--profile small|minilm]
python -m export --from-pretrained CHECKPOINT_DIR --name MODEL [--repository DIR]
"""

import argparse
import time
from pathlib import Path

import numpy as np

from export import corpus, evaluate, repository, tokenizer
from export.artifacts import export_onnx, export_torchscript, parity_samples
from export.configs import MemberSpec, fuse_config, member_config
from export.members import MAX_POSITIONS, SHAPES, CheckedInputs, TextCNN, TransformerClassifier
from export.train import accuracy, fit, fit_stacking, predict, seed_everything
from python_backend.fuse import stacking, weighted_mean
from python_backend.text import encode

ONNX_TENSORS = (("INPUT_IDS", "ATTENTION_MASK"), ("PROBS", "INPUT_ERRORS"))
# The libtorch backend's convention: <name>__<index>, in forward()'s argument and result order.
TORCHSCRIPT_TENSORS = (("INPUT_IDS__0", "ATTENTION_MASK__1"), ("PROBS__0", "INPUT_ERRORS__1"))


def encoded(tok, comments: list[corpus.Comment]):
    ids, mask = encode(tok, np.array([c.text for c in comments], dtype=object))
    return ids, mask, np.array([c.label for c in comments], dtype=np.int64)


def export_default(repo: Path, profile: str, seed: int) -> None:
    started = time.monotonic()
    shape = SHAPES[profile]
    train, validation, held_out = corpus.split(corpus.generate(seed=seed))
    tok = tokenizer.train([c.text for c in train], pad_to=shape.pad_to)
    (ids, mask, labels), val, test = (encoded(tok, part) for part in (train, validation, held_out))
    vocab, classes = tok.get_vocab_size(), len(corpus.TOPICS)
    print(
        f"corpus: {len(train)} train / {len(validation)} validation / {len(held_out)} held-out comments, "
        f"{classes} topics, vocabulary {vocab}"
    )

    seed_everything(seed)
    transformer = TransformerClassifier(vocab, classes, shape)
    if shape.pretrained:
        fit(transformer, ids, mask, labels, epochs=6, seed=seed)
    else:
        print(f"transformer: profile '{profile}' keeps RANDOM weights (a compute-cost profile, not a classifier)")
    textcnn = fit(TextCNN(vocab, classes), ids, mask, labels, epochs=6, seed=seed)
    print(f"trained in {time.monotonic() - started:.1f} s")

    members = {"transformer": transformer, "textcnn": textcnn}
    stacked_val = np.stack([predict(m, val[0], val[1]) for m in members.values()], axis=1)
    stacked_test = np.stack([predict(m, test[0], test[1]) for m in members.values()], axis=1)
    coef, bias = fit_stacking(stacked_val, val[2])
    report = {name: stacked_test[:, i] for i, name in enumerate(members)}
    report["ensemble: weighted mean"] = weighted_mean(stacked_test, np.ones(len(members)))
    report["ensemble: stacking"] = stacking(stacked_test, coef, bias)
    print("held-out accuracy:")
    for name, probs in report.items():
        print(f"  {name:<24} {accuracy(probs, test[2]):.4f}")

    samples = parity_samples(test[0], test[1])
    with repository.staging(repo) as stage:

        def member(name, platform, tensors, filename, write_artifact):
            (stage / name / "1").mkdir(parents=True)
            write_artifact(stage / name / "1" / filename)
            spec = MemberSpec(
                name, platform, *tensors, classes, vocab, MAX_POSITIONS, shape.pad_to, shape.instances, shape.threads
            )
            (stage / name / "config.pbtxt").write_text(member_config(spec))

        member(
            "transformer",
            "onnxruntime_onnx",
            ONNX_TENSORS,
            "model.onnx",
            lambda path: export_onnx(CheckedInputs(transformer, vocab, MAX_POSITIONS), path, samples),
        )
        member(
            "textcnn",
            "pytorch_libtorch",
            TORCHSCRIPT_TENSORS,
            "model.pt",
            lambda path: export_torchscript(CheckedInputs(textcnn, vocab, MAX_POSITIONS), path, samples),
        )
        # Only now, with every parity check passed, does anything reach the repository.
        repository.prepare(repo)
        tok.save(str(repo / "tokenizer" / "1" / "tokenizer.json"))
        staged_fuse = stage / "fuse.pbtxt"
        staged_fuse.write_text(fuse_config(list(members), list(corpus.TOPICS), vocab, MAX_POSITIONS))
        staged_fuse.replace(repo / "fuse" / "config.pbtxt")
        np.savez(repo / "fuse" / "1" / "stacking.npz", coef=coef, bias=bias, members=np.array(list(members)))
        for name in members:
            repository.install_model(stage / name, repo / name, trash=stage)
    print(
        f"wrote {', '.join(members)}, tokenizer.json, stacking.npz and fuse's config into {repo} "
        f"in {time.monotonic() - started:.1f} s"
    )
    print(f"accuracy on the hand-written comments ({evaluate.HANDWRITTEN.name}), as served:")
    for name, score in evaluate.accuracies(repo).items():
        print(f"  {name:<24} {score:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repository", type=Path, default=repository.COMMITTED)
    parser.add_argument("--profile", choices=sorted(SHAPES), default="small")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument(
        "--from-pretrained",
        type=Path,
        metavar="CHECKPOINT_DIR",
        help="a local Hugging Face sequence-classification checkpoint to add as a model",
    )
    parser.add_argument("--name", help="model name for --from-pretrained: a new model, or the next version of one")
    args = parser.parse_args()
    if args.from_pretrained:
        if not args.name:
            parser.error("--from-pretrained needs --name")
        from export.pretrained import export_pretrained

        export_pretrained(args.from_pretrained, args.name, args.repository)
    else:
        export_default(args.repository, args.profile, args.seed)


if __name__ == "__main__":
    main()
