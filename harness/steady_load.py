"""Steady client load on the `feedback` ensemble that records every request, so a model swap can be judged by it:
when each request started and ended, whether it failed, and what the members answered (MEMBER_PROBS), from which
the serving version is told by comparison with each version's in-process output."""

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from conventions import REPOSITORY
from python_backend.layout import parse_config
from release.gates import held_out, load_runner

TRANSFORMER_COLUMN = 0  # MEMBER_PROBS[:, 0] is the transformer's answer
LOAD_ROWS = 4  # rows per request of the steady load


@dataclass(frozen=True)
class Record:
    start: float  # time.monotonic()
    end: float
    error: str | None
    member_probs: np.ndarray | None


class SteadyLoad:
    """`threads` closed-loop gRPC clients sending the same batch back to back until the `with` block ends."""

    def __init__(
        self,
        url: str,
        ids: np.ndarray,
        mask: np.ndarray,
        threads: int = 3,
        model: str = "feedback",
        tenant: str | None = None,
    ):
        self.url, self.ids, self.mask, self.model, self.tenant = url, ids, mask, model, tenant
        self.records: list[Record] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        client = grpcclient.InferenceServerClient(self.url)
        inputs = [grpcclient.InferInput(n, list(self.ids.shape), "INT64") for n in ("INPUT_IDS", "ATTENTION_MASK")]
        inputs[0].set_data_from_numpy(self.ids)
        inputs[1].set_data_from_numpy(self.mask)
        if self.tenant is not None:  # feedback_routed's optional input
            inputs.append(grpcclient.InferInput("TENANT", [len(self.ids), 1], "BYTES"))
            inputs[-1].set_data_from_numpy(np.array([[self.tenant.encode()]] * len(self.ids), dtype=object))
        outputs = [grpcclient.InferRequestedOutput("MEMBER_PROBS")]
        try:
            while not self._stop.is_set():
                start = time.monotonic()
                try:
                    probs, error = client.infer(self.model, inputs, outputs=outputs).as_numpy("MEMBER_PROBS"), None
                except Exception as failure:  # every kind of failure counts, and the load goes on
                    probs, error = None, str(failure)
                self.records.append(Record(start, time.monotonic(), error, probs))  # list.append is thread-safe
        finally:
            client.close()

    def __enter__(self) -> "SteadyLoad":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def failures(self) -> list[Record]:
        return [r for r in self.records if r.error is not None]


def served_by(record: Record, column: int, answers: dict[str, np.ndarray]) -> str | None:
    """Which of `answers` (version name -> that member's expected probabilities) this response carries."""
    for name, expected in answers.items():
        if record.member_probs is not None and np.allclose(record.member_probs[:, column], expected, atol=1e-5):
            return name
    return None


def answers(model_dir: Path, version: str, repo: Path = REPOSITORY) -> np.ndarray:
    """What one version of a member answers for the load's rows (the first held-out rows of `repo`), in-process."""
    ids, mask, _ = held_out(repo)
    config_file = model_dir / version / "config.pbtxt"
    config = parse_config((config_file if config_file.exists() else model_dir / "config.pbtxt").read_text())
    return load_runner(config, model_dir / version)(ids[:LOAD_ROWS], mask[:LOAD_ROWS])


def wait_until(condition, what: str, timeout: float = 90) -> float:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return time.monotonic()


def served_versions(client, model: str, headers: dict | None = None) -> list[str]:
    """The repository index is an admin endpoint: the tests' servers need their key in `headers`."""
    index = client.get_model_repository_index(headers=headers)
    return [m["version"] for m in index if m["name"] == model and m["state"] == "READY"]
