"""The batched pipeline server the ensemble is compared with: mosec, one worker process per core, each batching up to
32 requests with a 2 ms wait, serving the same tokenizer, member files and fuse step as Triton (the in-process
ensemble over the repository's files).

    MOSEC_PORT=9000 BENCH_REPOSITORY=model_repository python -m perf.pipeline

POST /inference with {"text": "..."} answers {"label": ..., "windows": n}; a bad request gets HTTP 400. This is what
a team writes in forty lines when Triton is not an option: a web front in Rust, Python workers, dynamic batching.
"""

import os
from pathlib import Path

from mosec import Server, ValidationError, Worker

from python_backend.errors import BadRequest
from python_backend.inprocess import InProcessEnsemble

WORKERS = os.cpu_count() or 1
MAX_BATCH = 32
WAIT_MS = 2


class Classify(Worker):
    def __init__(self):
        super().__init__()
        self.ensemble = InProcessEnsemble(Path(os.environ["BENCH_REPOSITORY"]), threads=1)

    def forward(self, data: list[dict]) -> list[dict]:
        try:
            texts = [item["text"] for item in data]
        except (KeyError, TypeError) as error:
            raise ValidationError(f"expected {{'text': ...}}: {error}") from None
        if not all(isinstance(text, str) for text in texts):
            raise ValidationError("text must be a string")
        try:
            outputs = self.ensemble.classify(texts)  # the batch as one ragged call: padding costs nothing
        except BadRequest as error:
            raise ValidationError(str(error)) from None
        return [
            {"label": label.decode(), "windows": int(windows)}
            for label, windows in zip(outputs["LABEL"][:, 0], outputs["WINDOWS"][:, 0], strict=True)
        ]


def main() -> None:
    server = Server()
    server.append_worker(Classify, num=WORKERS, max_batch_size=MAX_BATCH, max_wait_time=WAIT_MS)
    server.run()


if __name__ == "__main__":
    main()
