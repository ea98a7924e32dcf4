"""The served ensembles' computation in one Python process, from the same repository files and the same code.

It is the reference the tests hold the server to, and the no-server limit the benchmarks compare against.
"""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from python_backend.fuse import Fuse as FuseStep
from python_backend.layout import latest_version, read_config, served_tokenizer
from python_backend.text import encode

Member = Callable[[np.ndarray, np.ndarray], list[np.ndarray]]


def run_file(
    platform: str,
    path: Path,
    input_names: tuple[str, ...] = ("INPUT_IDS", "ATTENTION_MASK"),
    output_names: tuple[str, ...] | None = None,
    threads: int = 0,
    gpu: bool = False,
) -> Member:
    """A member artifact as a function (input_ids, attention_mask) -> its outputs, run as the native backends run it:
    the one place that loads an ONNX or TorchScript file (served references, parity checks, deploy gates, benches).

    output_names: which outputs, in that order (onnxruntime; TorchScript returns its outputs in its own order).
    threads: intra-op threads; 0 leaves the library's setting (torch's is per process: the exporter keeps its own).
    gpu: onnxruntime's CUDA provider (falling back to CPU where it cannot load) or torch on cuda:0.
    """
    if platform == "onnxruntime_onnx":
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        providers = (["CUDAExecutionProvider"] if gpu else []) + ["CPUExecutionProvider"]
        session = ort.InferenceSession(str(path), options, providers=providers)
        wanted = list(output_names) if output_names else None
        return lambda input_ids, attention_mask: session.run(
            wanted, {input_names[0]: input_ids, input_names[1]: attention_mask}
        )
    if platform == "pytorch_libtorch":
        if threads:
            torch.set_num_threads(threads)
        device = "cuda:0" if gpu else "cpu"
        module = torch.jit.load(str(path), map_location=device).eval()

        def run(input_ids: np.ndarray, attention_mask: np.ndarray) -> list[np.ndarray]:
            with torch.inference_mode():
                outputs = module(torch.from_numpy(input_ids).to(device), torch.from_numpy(attention_mask).to(device))
            return [output.cpu().numpy() for output in (outputs if isinstance(outputs, tuple | list) else [outputs])]

        return run
    raise ValueError(f"{path}: no in-process runner for platform {platform!r}")


def load_artifact(config, version_dir: Path, threads: int = 0, gpu: bool = False) -> Member:
    """The artifact in `version_dir` as its config.pbtxt describes it (platform, file name, tensor names)."""
    filename = config.default_model_filename or {"onnxruntime_onnx": "model.onnx"}.get(config.platform, "model.pt")
    inputs, outputs = tuple(t.name for t in config.input), tuple(t.name for t in config.output)
    return run_file(config.platform, version_dir / filename, inputs, outputs, threads, gpu)


def load_member(repository: Path, name: str, threads: int = 1, gpu: bool = False) -> Member:
    """A member's latest version as a function (input_ids, attention_mask) -> [probs, input_errors]."""
    model_dir = repository / name
    return load_artifact(read_config(model_dir), latest_version(model_dir), threads, gpu)


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
        self.tokenizer = served_tokenizer(repository)
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
