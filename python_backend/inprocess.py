"""The served ensembles' computation in one Python process, from the same repository files and the same code.

It is the reference the tests hold the server to, and the no-server limit the benchmarks compare against.
"""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from python_backend.fuse import Fuse
from python_backend.heads import HeadCache, request_tenant
from python_backend.layout import latest_version, read_config, served_tokenizer
from python_backend.text import Windows, encode_windows

Rows = np.ndarray | list[np.ndarray]  # one request's [rows, width] array, or several requests' arrays
Member = Callable[[Rows, Rows], list[np.ndarray]]
# A member's graph inputs (export.members.RaggedInputs): ids and mask, and each row's length in each.
OUTPUTS = ("PROBS", "LABEL", "MEMBER_PROBS", "WINDOWS")  # what both ensembles answer
TENANT_OUTPUTS = ("TENANT_PROBS", "TENANT_LABEL", "TENANT_CLASSES")  # what `feedback_tenant` adds
RAGGED_INPUTS = ("INPUT_IDS", "ATTENTION_MASK", "INPUT_IDS_LENGTHS", "ATTENTION_MASK_LENGTHS")


def ragged(input_ids: Rows, attention_mask: Rows) -> list[np.ndarray]:
    """Requests as Triton's ragged batching hands them to a member in one call: every row's elements end to end,
    and each row's length (BATCH_ITEM_SHAPE). Padding a request carries stays in it; the graph skips it."""
    ids = input_ids if isinstance(input_ids, list) else [input_ids]
    masks = attention_mask if isinstance(attention_mask, list) else [attention_mask]

    def lengths(arrays: list[np.ndarray]) -> np.ndarray:
        return np.concatenate([np.full((len(a), 1), a.shape[1], np.int32) for a in arrays])

    flat = [np.concatenate([np.asarray(a, np.int64).reshape(-1) for a in arrays]) for arrays in (ids, masks)]
    return [*flat, lengths(ids), lengths(masks)]


def run_file(
    platform: str,
    path: Path,
    input_names: tuple[str, ...] = RAGGED_INPUTS,
    output_names: tuple[str, ...] | None = None,
    threads: int = 0,
    gpu: bool = False,
) -> Member:
    """A member artifact as a function (input_ids, attention_mask) -> its outputs, run as the native backends run it,
    one request or several in one ragged batch: the one place that loads an ONNX or TorchScript file (served
    references, parity checks, deploy gates, benches).

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
            wanted, dict(zip(input_names, ragged(input_ids, attention_mask), strict=True))
        )
    if platform == "pytorch_libtorch":
        if threads:
            torch.set_num_threads(threads)
        device = "cuda:0" if gpu else "cpu"
        module = torch.jit.load(str(path), map_location=device).eval()

        def run(input_ids: Rows, attention_mask: Rows) -> list[np.ndarray]:
            with torch.inference_mode():
                outputs = module(*(torch.from_numpy(a).to(device) for a in ragged(input_ids, attention_mask)))
            return [output.cpu().numpy() for output in (outputs if isinstance(outputs, tuple | list) else [outputs])]

        return run
    raise ValueError(f"{path}: no in-process runner for platform {platform!r}")


def load_artifact(config, version_dir: Path, threads: int = 0, gpu: bool = False) -> Member:
    """The artifact in `version_dir` as its config.pbtxt describes it (platform, file name, tensor names)."""
    filename = config.default_model_filename or {"onnxruntime_onnx": "model.onnx"}.get(config.platform, "model.pt")
    inputs = tuple(t.name for t in config.input) + tuple(b.target_name[0] for b in config.batch_input)
    outputs = tuple(t.name for t in config.output)
    return run_file(config.platform, version_dir / filename, inputs, outputs, threads, gpu)


def load_member(repository: Path, name: str, threads: int = 1, gpu: bool = False) -> Member:
    """A member's latest version as a function (input_ids, attention_mask) -> [probs, input_errors]."""
    model_dir = repository / name
    return load_artifact(read_config(model_dir), latest_version(model_dir), threads, gpu)


class RepositoryFuse(Fuse):
    """The fuse step alone, as the repository's fuse config sets it up: member outputs to ensemble outputs."""

    def __init__(self, repository: Path):
        config = read_config(repository / "fuse")
        parameters = {key: value.string_value for key, value in config.parameters.items()}
        super().__init__([t.name for t in config.input], parameters, str(latest_version(repository / "fuse")))

    def __call__(self, member_outputs: list[list[np.ndarray]], windows: np.ndarray | None = None) -> dict:
        """Each member's [probs, input_errors] (the transformer's with its EMBEDDING), in member_names order;
        input_errors as the ensembles wire it, from the first member; `windows` as the tokenizer gives it (None: a
        comment per row). Raises BadRequest as the served fuse step answers an error. FEATURES, as `feedback_tenant`
        hands them to the tenant heads, comes with the others when a member gave an EMBEDDING."""
        named = dict(zip(self.probs_inputs, (outputs[0] for outputs in member_outputs), strict=True))
        embedding = next((outputs[2] for outputs in member_outputs if len(outputs) > 2), None)
        stacked = self.stacked(
            named | {"input_errors": member_outputs[0][1], "windows": windows, "embedding": embedding}
        )
        return dict(zip((*OUTPUTS, "FEATURES"), self.outputs(*stacked), strict=False))


class InProcessEnsemble:
    """The default ensemble, or with `members` ({member: model}) a tenant's, whose own models stand in for some."""

    def __init__(self, repository: Path, threads: int = 1, gpu: bool = False, members: dict[str, str] | None = None):
        self.tokenizer = served_tokenizer(repository)
        tokenizer_config = read_config(repository / "tokenizer")
        self.windows = Windows.from_parameters({k: v.string_value for k, v in tokenizer_config.parameters.items()})
        self.fuse = RepositoryFuse(repository)
        models = [(members or {}).get(name, name) for name in self.fuse.member_names]
        self.members = [load_member(repository, model, threads, gpu) for model in models]

    def classify_ids(self, input_ids: Rows, attention_mask: Rows, windows: np.ndarray | None = None) -> dict:
        """PROBS, LABEL, MEMBER_PROBS and WINDOWS, as the `feedback` ensemble returns them (with `windows`, as
        `feedback_text` does for the tokenizer's rows)."""
        return self.fuse([member(input_ids, attention_mask) for member in self.members], windows)

    def tokenize(self, texts: list[str]) -> list[np.ndarray]:
        """The tokenizer step's outputs: INPUT_IDS, ATTENTION_MASK and WINDOWS (python_backend/text.py)."""
        return encode_windows(self.tokenizer, np.array(texts, dtype=object), self.windows)

    def classify(self, texts: list[str], per_request: int = 64) -> dict[str, np.ndarray]:
        """What the `feedback_text` ensemble returns for these texts, sent `per_request` comments at a time (its
        max_batch_size); a request's answers do not depend on what else it holds."""
        parts = [
            self.classify_ids(*self.tokenize(texts[i : i + per_request])) for i in range(0, len(texts), per_request)
        ]
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    def classify_tenant(self, texts: list[str], tenant: str, heads: HeadCache) -> dict[str, np.ndarray]:
        """What `feedback_tenant` returns for these texts and TENANT: classify()'s answer and the tenant head's
        TENANT_PROBS, TENANT_LABEL and TENANT_CLASSES (BadRequest as the served step refuses)."""
        answer = self.classify(texts)
        (result,) = heads.answer([(answer["FEATURES"], request_tenant(np.array([[tenant]], dtype=object)))])
        if isinstance(result, Exception):
            raise result
        return answer | dict(zip(TENANT_OUTPUTS, result, strict=True))
