"""The served ensembles' computation in one Python process, from the same repository files and the same code.

It is the reference the tests hold the server to, and the no-server limit the benchmarks compare against.
"""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from tokenizers import Tokenizer

from python_backend.fuse import Fuse as FuseStep
from python_backend.layout import latest_version, read_config
from python_backend.text import encode

Member = Callable[[np.ndarray, np.ndarray], list[np.ndarray]]


def load_member(repository: Path, name: str, threads: int = 1, gpu: bool = False) -> Member:
    """A member's latest version as a function (input_ids, attention_mask) -> [probs, input_errors], run as its
    config's platform.

    gpu: onnxruntime's CUDA provider (falling back to CPU where it cannot load) or torch on cuda:0.
    """
    model_dir = repository / name
    platform = read_config(model_dir).platform
    if platform == "onnxruntime_onnx":
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(
            str(latest_version(model_dir) / "model.onnx"),
            options,
            providers=(["CUDAExecutionProvider"] if gpu else []) + ["CPUExecutionProvider"],
        )
        return lambda input_ids, attention_mask: session.run(
            None, {"INPUT_IDS": input_ids, "ATTENTION_MASK": attention_mask}
        )
    if platform == "pytorch_libtorch":
        torch.set_num_threads(threads)
        device = "cuda:0" if gpu else "cpu"
        module = torch.jit.load(str(latest_version(model_dir) / "model.pt"), map_location=device).eval()

        def run(input_ids: np.ndarray, attention_mask: np.ndarray) -> list[np.ndarray]:
            with torch.inference_mode():
                ids, mask = torch.from_numpy(input_ids).to(device), torch.from_numpy(attention_mask).to(device)
                return [output.cpu().numpy() for output in module(ids, mask)]

        return run
    raise ValueError(f"{name}: no in-process runner for platform {platform!r}")


class Fuse(FuseStep):
    """The fuse step alone, as the repository's fuse config sets it up: member outputs to ensemble outputs."""

    def __init__(self, repository: Path):
        config = read_config(repository / "fuse")
        parameters = {key: value.string_value for key, value in config.parameters.items()}
        super().__init__([t.name for t in config.input], parameters, str(latest_version(repository / "fuse")))

    def __call__(self, member_outputs: list[list[np.ndarray]]) -> dict[str, np.ndarray]:
        """Each member's [probs, input_errors], in member_names order; input_errors as the ensembles wire it, from
        the first member. Raises BadRequest as the served fuse step answers an error."""
        named = dict(zip(self.probs_inputs, (outputs[0] for outputs in member_outputs), strict=True))
        stacked = self.stacked(named | {"input_errors": member_outputs[0][1]})
        return dict(zip(("PROBS", "LABEL", "MEMBER_PROBS"), self.outputs(stacked), strict=True))


class InProcessEnsemble:
    def __init__(self, repository: Path, threads: int = 1, gpu: bool = False):
        self.tokenizer = Tokenizer.from_file(str(latest_version(repository / "tokenizer") / "tokenizer.json"))
        self.fuse = Fuse(repository)
        self.members = [load_member(repository, name, threads, gpu) for name in self.fuse.member_names]

    def classify_ids(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        """PROBS, LABEL and MEMBER_PROBS, as the `feedback` ensemble returns them."""
        return self.fuse([member(input_ids, attention_mask) for member in self.members])

    def tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return encode(self.tokenizer, np.array(texts, dtype=object))

    def classify(self, texts: list[str]) -> dict[str, np.ndarray]:
        """What the `feedback_text` ensemble returns for these texts."""
        return self.classify_ids(*self.tokenize(texts))
