"""`python perf/gpu_member_parity.py [REPOSITORY]`: the TorchScript members on CUDA against CPU, good and bad rows.

infra/gpu_overlay.py moves the libtorch members to KIND_GPU, where the pytorch backend runs the same model.pt on the
GPU, input guard (export.members.RaggedInputs) included, its inputs laid out as Triton's ragged batching does. On a
machine with a GPU and a CUDA torch this checks that INPUT_ERRORS and the predicted class agree exactly, and PROBS
within 1e-3, for random in-vocabulary rows and for rows a client got wrong. (1e-3, not the 1e-5 of same-device
checks: the trained textcnn's logits are large, and CPU and CUDA sum in different orders; on an H200 the gap was
2e-4 with TF32, cuDNN and the JIT fusers each turned off.)
Exits non-zero on any difference beyond that. Needs only torch and numpy.
"""

import re
import sys
from pathlib import Path

import numpy as np
import torch

TOLERANCE = 1e-3


def rows(vocab_size: int, seed: int = 0) -> list[tuple[str, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab_size, size=(32, 64), dtype=np.int64)
    mask = (np.arange(64) < rng.integers(1, 65, size=(32, 1))).astype(np.int64)
    bad_ids, bad_mask = ids.copy(), mask.copy()
    bad_ids[0, 3], bad_ids[1, 5], bad_mask[2, 0] = vocab_size + 7, -2, 3
    long_ids = rng.integers(1, vocab_size, size=(2, 600), dtype=np.int64)
    return [
        ("good rows, batch 32", ids * mask, mask),
        ("good rows, batch 1", ids[:1] * mask[:1], mask[:1]),
        ("bad ids and mask", bad_ids, bad_mask),
        ("sequence over 512", long_ids, np.ones_like(long_ids)),
    ]


def ragged(ids: np.ndarray, mask: np.ndarray, device: str) -> list[torch.Tensor]:
    """A [rows, width] request as the member graph takes it: elements end to end, and each row's length in each.
    The layout of python_backend.inprocess.ragged, written again for one request so that this script needs only
    torch and numpy on the GPU machine (inprocess imports onnxruntime and the tokenizer)."""
    lengths = [torch.full((len(a), 1), a.shape[1], dtype=torch.int32) for a in (ids, mask)]
    return [t.to(device) for t in (torch.from_numpy(ids.reshape(-1)), torch.from_numpy(mask.reshape(-1)), *lengths)]


def main() -> int:
    repository = Path(sys.argv[1] if len(sys.argv) > 1 else "model_repository")
    assert torch.cuda.is_available(), "no CUDA device"
    failures = 0
    for config in sorted(repository.glob("*/config.pbtxt")):
        text = config.read_text()
        if 'platform: "pytorch_libtorch"' not in text:
            continue
        vocab_size = int(re.search(r'"vocab_size" value: \{ string_value: "(\d+)"', text).group(1))
        version = max((p for p in config.parent.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        on_cpu = torch.jit.load(str(version / "model.pt"), map_location="cpu").eval()
        on_gpu = torch.jit.load(str(version / "model.pt"), map_location="cuda:0").eval()
        for what, ids, mask in rows(vocab_size):
            with torch.inference_mode():
                cpu = on_cpu(*ragged(ids, mask, "cpu"))
                gpu = [output.cpu() for output in on_gpu(*ragged(ids, mask, "cuda:0"))]
            diff = float((cpu[0] - gpu[0]).abs().max())
            same = torch.equal(cpu[1], gpu[1]) and torch.equal(cpu[0].argmax(1), gpu[0].argmax(1))
            ok = diff <= TOLERANCE and same
            failures += not ok
            print(
                f"{config.parent.name} {what}: max |PROBS cpu - cuda| {diff:.2e}, INPUT_ERRORS and classes "
                f"{'equal' if same else 'DIFFER'} (flags {gpu[1].ravel()[:4].tolist()}) -> {'ok' if ok else 'FAILED'}"
            )
    verdict = f"{failures} FAILED" if failures else "all equal"
    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}: {verdict}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
