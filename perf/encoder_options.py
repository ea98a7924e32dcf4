"""How the accurate profile's encoder member was chosen: each option measured the same way, in one run.

    python -m perf.encoder_options [--out DIR]   # about 5 minutes on 2 cores; writes DIR/summary.md

Options: all-MiniLM-L6-v2 with all six layers or the first three, float or int8 (static, export/quantize.py; and
onnxruntime's dynamic quantization, which answers a comment differently depending on its batch), and the padded
computation the packed one replaced. For each: the member's accuracy on the synthetic held-out rows and on the 60
hand-written comments options were chosen on (the 120 of handwritten_holdout.csv are not used here), the largest
difference between a comment's probabilities alone and inside a batch of 16, and CPU time per comment on the bench's
length mix (perf/workload.py), one thread, batches of 16 comments as one ragged call.
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic

from export import datasets, evaluate, minilm
from export.artifacts import export_onnx
from export.members import MAX_POSITIONS, RaggedInputs
from export.quantize import quantize_int8
from perf import workload
from perf.runs import machine, start_scenario, write_summary
from python_backend.inprocess import run_file
from python_backend.text import encode
from release.parity import parity_samples

BATCH = 16
ROUNDS = 3


class Padded(torch.nn.Module):
    """BertModel itself on the padded batch (the computation before packing), with the same head."""

    def __init__(self, classifier: minilm.SentenceClassifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.classifier.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        weights = attention_mask.to(hidden.dtype)[..., None]
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return self.classifier.head(torch.nn.functional.normalize(pooled, dim=-1)).softmax(-1)


def cpu_per_comment(run, rows: list[np.ndarray], pad_to: int | None = None) -> float:
    """µs of CPU per comment, batches of BATCH consecutive comments of the mix (padded to `pad_to` if given)."""
    batches = []
    for start in range(0, len(rows) - BATCH + 1, BATCH):
        part = rows[start : start + BATCH]
        if pad_to:
            ids = np.zeros((BATCH, pad_to), np.int64)
            for index, row in enumerate(part):
                ids[index, : min(row.shape[1], pad_to)] = row[0, :pad_to]
            batches.append((ids, (ids != 0).astype(np.int64)))
        else:
            batches.append((part, [np.ones_like(row) for row in part]))
    run(*batches[0])
    best = float("inf")
    for _ in range(ROUNDS):  # the best of a few rounds: other work on the machine only ever adds time
        started = time.process_time()
        for ids, mask in batches:
            run(ids, mask)
        best = min(best, (time.process_time() - started) / (len(batches) * BATCH) * 1e6)
    return best


def padded_row(classifier, path: Path, ids: np.ndarray, mask: np.ndarray, mix: list[np.ndarray]) -> str:
    """The same encoder as BertModel computes it, every comment padded (and cut) to 64 tokens, as before."""
    torch.onnx.export(
        Padded(classifier).eval(),
        (torch.from_numpy(ids[:4, :16]), torch.from_numpy(mask[:4, :16])),
        str(path),
        dynamo=False,
        input_names=["INPUT_IDS", "ATTENTION_MASK"],
        output_names=["PROBS"],
        dynamic_axes={name: {0: "rows", 1: "tokens"} for name in ("INPUT_IDS", "ATTENTION_MASK")},
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    run = lambda ids, mask: session.run(None, {"INPUT_IDS": ids, "ATTENTION_MASK": mask})  # noqa: E731
    return f"| 6 layers, float, padded to 64 (before) | — | — | — | {cpu_per_comment(run, mix, pad_to=64):,.0f} |"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m perf.encoder_options", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("perf/results/encoder_options"))
    args = parser.parse_args()
    start_scenario(args.out, args)
    data = datasets.synthetic()
    tokenizer = minilm.tokenizer()
    train_ids, train_mask = encode(tokenizer, np.array(data.train.texts, dtype=object))
    test_ids, test_mask = encode(tokenizer, np.array(data.held_out.texts, dtype=object))
    texts, labels = evaluate.read(evaluate.HANDWRITTEN)
    hand_ids, hand_mask = encode(tokenizer, np.array(texts, dtype=object))
    truth = np.array([data.class_names.index(label) for label in labels])
    mix = [encode(tokenizer, np.array([text], dtype=object))[0] for text in workload.mix()]
    samples = parity_samples(test_ids[:64], test_mask[:64])
    lines = [
        f"{machine()}. Member alone (the served ensemble adds textcnn and the fuse step); CPU: one thread, "
        f"batches of {BATCH} comments of the bench's mix (mean {np.mean([r.shape[1] for r in mix]):.1f} tokens), "
        f"best of {ROUNDS} rounds.",
        "",
        "| option | held-out (1,200) | hand-written (60) | alone vs batched, max diff | CPU µs per comment |",
        "|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        for layers in (6, 3):
            torch.manual_seed(13)
            classifier = minilm.SentenceClassifier(len(data.class_names), layers)
            classifier.fit_head(train_ids, train_mask, data.train.labels)
            name = f"{layers} layers"
            files = {f"{name}, float": folder / f"l{layers}.onnx"}
            export_onnx(
                RaggedInputs(classifier, tokenizer.get_vocab_size(), MAX_POSITIONS), files[f"{name}, float"], samples
            )
            static = f"{name}, int8 static" + (" (shipped)" if layers == 6 else "")
            files[static] = folder / f"l{layers}-int8.onnx"
            quantize_int8(files[f"{name}, float"], files[static], train_ids, train_mask)
            files[f"{name}, int8 dynamic"] = folder / f"l{layers}-dynamic.onnx"
            quantize_dynamic(
                str(files[f"{name}, float"]), str(files[f"{name}, int8 dynamic"]), weight_type=QuantType.QInt8
            )
            if layers == 6:
                lines.append(padded_row(classifier, folder / "padded.onnx", test_ids, test_mask, mix))
            for option, path in files.items():
                run = run_file("onnxruntime_onnx", path, output_names=("PROBS",), threads=1)
                held = np.concatenate(
                    [run(test_ids[i : i + 256], test_mask[i : i + 256])[0] for i in range(0, len(test_ids), 256)]
                )
                hand = run(hand_ids, hand_mask)[0]
                rows = [hand_ids[i : i + 1, : int(hand_mask[i].sum())] for i in range(BATCH)]
                together = run(rows, [np.ones_like(r) for r in rows])[0]
                alone = np.concatenate([run(r, np.ones_like(r))[0] for r in rows])
                lines.append(
                    f"| {option} | {(held.argmax(1) == data.held_out.labels).mean():.3f} | "
                    f"{(hand.argmax(1) == truth).mean():.3f} | {np.abs(together - alone).max():.1e} | "
                    f"{cpu_per_comment(run, mix):,.0f} |"
                )
    print("\n".join(lines))
    write_summary(args.out, "encoder_options", lines, markdown=True)


if __name__ == "__main__":
    main()
