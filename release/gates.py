"""The checks a model must pass before release/deploy.py lets Triton see it: its interface is what the ensembles
connect, its artifact loads and gives the same answers batched as row by row, and its held-out accuracy holds up.
Python-backend models, whose code only Triton's stub can run, are served in a throwaway tritonserver instead: an
ensemble's Python step (fuse, tokenizer) in a copy of the live repository, held to the same parity and accuracy
gates through `feedback_text`; any other alone, to see that it loads."""

import shutil
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import tritonclient.http as httpclient
from tokenizers import Tokenizer
from tritonclient.grpc import model_config_pb2

from python_backend.inprocess import InProcessEnsemble, load_artifact
from python_backend.layout import read_config, served_tokenizer
from python_backend.text import encode
from release import staging
from release.parity import PARITY_TOLERANCE, ParityError, check_parity, parity_samples, row_by_row
from server.launch import serving

# Held-out accuracy below this is refused, whatever the live version scores. The built-in corpus labels a few rows
# against their text on purpose, and the pretrained member, which generalizes rather than fits its templates, scores
# 0.89 on it (the small members 0.96).
MIN_ACCURACY = 0.85
MAX_DROP = 0.01  # nor may a candidate score more than this under the live version
PROBABILITY_TOLERANCE = 1e-3  # fuse combines probability rows: each must sum to 1
PARITY_ROWS = 32  # held-out rows a Python step's candidate serves one by one, to compare with the batched answers

Runner = Callable[[np.ndarray, np.ndarray], np.ndarray]
Spec = tuple[int, tuple[int, ...]]  # (data_type, dims) of a tensor


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float((probs.argmax(1) == labels).mean())


class Rejected(Exception):
    """A candidate that must not be served; the message says why."""


def spec(tensor) -> Spec:
    return tensor.data_type, tuple(tensor.dims)


def fits(have: Spec, wanted: Spec, is_input: bool = False) -> bool:
    """Same dtype and rank, and every dim the ensembles fix (not -1) is the same; an input may also take any size
    (-1) where the ensembles hand it a fixed one."""
    (have_type, have_dims), (wanted_type, wanted_dims) = have, wanted
    return (
        have_type == wanted_type
        and len(have_dims) == len(wanted_dims)
        and all(w in (-1, h) or (is_input and h == -1) for h, w in zip(have_dims, wanted_dims, strict=True))
    )


def describe(tensor_spec: Spec) -> str:
    return f"{model_config_pb2.DataType.Name(tensor_spec[0])} {list(tensor_spec[1])}"


def read_configs(repo: Path) -> dict[str, model_config_pb2.ModelConfig]:
    return {path.parent.name: read_config(path.parent) for path in repo.glob("*/config.pbtxt")}


def ensemble_interface(repo: Path, model: str) -> tuple[dict[str, Spec], dict[str, Spec], int]:
    """The inputs and outputs every ensemble step running `model` needs, typed by the tensors' other ends
    (the step or ensemble input that produces each input, the step or ensemble output that consumes each output),
    and the largest batch those ensembles accept. Empty when no ensemble uses the model."""
    all_configs = read_configs(repo)
    inputs, outputs, batch = {}, {}, 0
    for ensemble in all_configs.values():
        steps = ensemble.ensemble_scheduling.step
        if ensemble.platform != "ensemble" or model not in {step.model_name for step in steps}:
            continue
        produced = {tensor.name: spec(tensor) for tensor in ensemble.input}
        consumed = {tensor.name: spec(tensor) for tensor in ensemble.output}
        for step in steps:
            if step.model_name != model:
                other = all_configs[step.model_name]
                its_outputs = {tensor.name: spec(tensor) for tensor in other.output}
                its_inputs = {tensor.name: spec(tensor) for tensor in other.input}
                produced |= {tensor: its_outputs[key] for key, tensor in step.output_map.items()}
                consumed |= {tensor: its_inputs[key] for key, tensor in step.input_map.items()}
        for step in steps:
            if step.model_name == model:
                inputs |= {key: produced[tensor] for key, tensor in step.input_map.items()}
                outputs |= {key: consumed[tensor] for key, tensor in step.output_map.items() if tensor in consumed}
        batch = max(batch, ensemble.max_batch_size)
    return inputs, outputs, batch


def check_interface(config: model_config_pb2.ModelConfig, repo: Path, role: str) -> None:
    """Names, dtypes and dims (the class count included) as the ensembles that run `role` connect them."""
    inputs, outputs, batch = ensemble_interface(repo, role)
    for kind, declared, expected in (("input", config.input, inputs), ("output", config.output, outputs)):
        have = {tensor.name: spec(tensor) for tensor in declared}
        for name, wanted in expected.items():
            if name not in have:
                raise Rejected(
                    f"{kind} '{name}' is missing: the ensembles using {role} need it, config has {sorted(have)}"
                )
            if not fits(have[name], wanted, is_input=kind == "input"):
                raise Rejected(f"{kind} '{name}' is {describe(have[name])}, the ensembles expect {describe(wanted)}")
    if config.max_batch_size < batch:
        raise Rejected(f"max_batch_size {config.max_batch_size} is below the ensembles' {batch}")
    if config.backend != "python" and outputs:
        check_label_set(config, repo)


def served_class_names(repo: Path) -> list[str]:
    """The label set the ensembles serve: the fuse step's, in column order."""
    return read_config(repo / "fuse").parameters["class_names"].string_value.split(",")


@dataclass(frozen=True)
class Target:
    """What a model exported for a repository must fit, read in one place: the served label set (in column order),
    the tokenizer whose ids the ensembles feed, whether an ensemble runs the model (then it goes live through
    deploy's gates), and, when asked for, the held-out rows as that tokenizer encodes them."""

    repo: Path
    class_names: list[str]
    tokenizer: Tokenizer
    member: bool

    @cached_property
    def held_out(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return held_out(self.repo)

    def accuracy(self, probs: np.ndarray) -> float:
        """Accuracy of a model's probabilities for the held-out rows."""
        return accuracy(probs, self.held_out[2])


def target(repo: Path, model: str) -> Target:
    return Target(repo, served_class_names(repo), served_tokenizer(repo), any(ensemble_interface(repo, model)))


def check_label_set(config: model_config_pb2.ModelConfig, repo: Path) -> None:
    """A member's PROBS columns must mean the served classes, in the served order, not just be as many."""
    served = served_class_names(repo)
    if "class_names" not in config.parameters:
        raise Rejected(f"config names no classes (parameter class_names); the ensembles serve {served}")
    have = config.parameters["class_names"].string_value.split(",")
    if have != served:
        missing, extra = sorted(set(served) - set(have)), sorted(set(have) - set(served))
        difference = f"missing {missing}, unknown {extra}" if missing or extra else "same names, other order"
        raise Rejected(f"label set {have} is not the served {served}: {difference}")


def load_runner(config: model_config_pb2.ModelConfig, version_dir: Path) -> Runner:
    """(token ids, mask) -> first output, run as the serving backends run it (onnxruntime / torch.jit, CPU)."""
    run = load_artifact(config, version_dir)
    return lambda ids, mask: run(ids, mask)[0]


def held_out(repo: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The exporter's held-out split (staging.HELD_OUT, in the served label set), tokenized by the served
    tokenizer."""
    tokenizer = served_tokenizer(repo)
    rows = staging.read_held_out(repo)
    served = served_class_names(repo)
    ids, mask = encode(tokenizer, np.array([text for text, _ in rows], dtype=object))
    return ids, mask, np.array([served.index(label) for _, label in rows], dtype=np.int64)


def score(run: Runner, ids: np.ndarray, mask: np.ndarray, labels: np.ndarray, batch: int) -> float:
    return accuracy(
        np.concatenate([run(ids[i : i + batch], mask[i : i + batch]) for i in range(0, len(ids), batch)]), labels
    )


def check_artifact(name: str, config, version_dir: Path, ids: np.ndarray, mask: np.ndarray) -> Runner:
    """Loads, gives one probability row per input row on every parity sample, and batched equals row by row."""
    try:
        run = load_runner(config, version_dir)
    except Exception as error:  # onnxruntime and torch raise their own types for a corrupt file
        raise Rejected(f"artifact does not load: {error}") from None
    classes = config.output[0].dims[-1]
    samples = parity_samples(ids, mask)
    for sample_ids, sample_mask in samples:
        try:
            probs = run(sample_ids, sample_mask)
        except Exception as error:
            raise Rejected(f"artifact fails on a batch of shape {list(sample_ids.shape)}: {error}") from None
        if probs.shape != (len(sample_ids), classes):
            raise Rejected(
                f"artifact returns shape {list(probs.shape)}, its config says [{len(sample_ids)}, {classes}]"
            )
        if not np.allclose(probs.sum(1), 1.0, atol=PROBABILITY_TOLERANCE) or (probs < 0).any():
            raise Rejected("artifact outputs are not probability rows (each must be >= 0 and sum to 1)")
    try:
        check_parity(name, row_by_row(run), run, samples)
    except ParityError as error:
        raise Rejected(f"batched and row-by-row outputs differ: {error}") from None
    return run


@contextmanager
def trial_server(trial: Path, model: str):
    """A throwaway tritonserver on the repository `trial` (explicit mode: everything in it loads); yields its HTTP
    address. A model that does not load is Rejected with Triton's own error line."""
    log = trial.parent / f"{trial.name}.trial.log"  # beside the folder, so Triton does not take it for a model
    try:
        with ExitStack() as stack:
            try:
                server = stack.enter_context(serving(trial, log=log, model_control="explicit"))
            except (RuntimeError, TimeoutError):  # only a failed start is Rejected, not what the caller's block raises
                lines = log.read_text(errors="replace").splitlines()
                reasons = [line for line in lines if model in line and ("rror" in line or "failed" in line)]
                raise Rejected(f"does not load in Triton: {' | '.join(reasons[-2:]) or lines[-1:]}") from None
            yield server.http_url
    finally:
        log.unlink(missing_ok=True)


def served_text(url: str, texts: list[str], batch: int) -> tuple[np.ndarray, list[str]]:
    """PROBS and LABELs of `feedback_text` for `texts`, sent `batch` rows per request."""
    client = httpclient.InferenceServerClient(url)
    probs, labels = [], []
    try:
        for i in range(0, len(texts), batch):
            rows = np.array([[text.encode()] for text in texts[i : i + batch]], dtype=object)
            tensor = httpclient.InferInput("TEXT", list(rows.shape), "BYTES")
            tensor.set_data_from_numpy(rows)
            result = client.infer("feedback_text", [tensor])
            probs.append(result.as_numpy("PROBS"))
            labels += [label.decode() for label in result.as_numpy("LABEL").ravel()]
    finally:
        client.close()
    return np.concatenate(probs), labels


def check_python_step(repo: Path, version_dir: Path, live: Path | None, limits) -> str:
    """An ensemble's Python step (fuse, tokenizer) can only be judged inside Triton: serve a copy of the live
    repository with the candidate in its place, and hold `feedback_text` on the held-out rows to a member's gates:
    batched equals row by row, and the accuracy gate (on the LABELs clients get) against the live ensemble."""
    model = version_dir.parent.name
    rows = staging.read_held_out(repo)
    texts, truth = [text for text, _ in rows], [label for _, label in rows]
    with staging.staging(repo) as trial:
        for source in repo.iterdir():
            if (source / "config.pbtxt").exists() and source.name != model:
                shutil.copytree(source, trial / source.name, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(version_dir, trial / model / "1", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(version_dir.parent / "config.pbtxt", trial / model / "config.pbtxt")
        with trial_server(trial, model) as url:
            batched, labels = served_text(url, texts, batch=64)
            single, _ = served_text(url, texts[:PARITY_ROWS], batch=1)
    difference = float(np.abs(batched[:PARITY_ROWS] - single).max())
    if not difference <= PARITY_TOLERANCE:
        raise Rejected(f"feedback_text batched and row by row differ by {difference:.2e} > {PARITY_TOLERANCE}")
    report = f"serves in Triton, batched = row by row within {difference:.1e}"
    if limits is None:  # rollback: the target served before; an accuracy gate must not block the way back
        return report
    min_accuracy, max_drop = limits
    candidate = float(np.mean(np.array(labels) == np.array(truth)))
    if candidate < min_accuracy:
        raise Rejected(f"held-out accuracy {candidate:.4f} is below the threshold {min_accuracy}")
    report += f", held-out accuracy {candidate:.4f} through feedback_text"
    if live is not None:
        served = InProcessEnsemble(repo).classify(texts)["LABEL"].ravel()
        current = float(np.mean([label.decode() for label in served] == np.array(truth)))
        if candidate < current - max_drop:
            raise Rejected(f"held-out accuracy {candidate:.4f} is more than {max_drop} under the live {current:.4f}")
        report += f" (live version {live.name}: {current:.4f})"
    return report


def trial_load(stage: Path, model: str) -> None:
    """Python-backend code runs only inside Triton's stub: load the staged model alone in a throwaway tritonserver."""
    with trial_server(stage, model):
        pass


def validate(repo: Path, role: str, stage: Path, version_dir: Path, config, live: Path | None, limits) -> str:
    """Every check the candidate staged in `version_dir` must pass to serve as `role` (the ensembles' member it
    stands in for); `live` is the version it must not fall behind, `limits` (min accuracy, max drop) or None to
    skip the accuracy gate. Returns what was measured."""
    check_interface(config, repo, role)
    if config.backend == "python":
        if any(ensemble_interface(repo, role)):
            return check_python_step(repo, version_dir, live, limits)
        trial_load(stage, version_dir.parent.name)
        return "loads in Triton"
    if config.platform not in ("onnxruntime_onnx", "pytorch_libtorch"):
        raise Rejected(
            f"platform '{config.platform}' cannot be checked here: onnxruntime_onnx, pytorch_libtorch or python"
        )
    if not config.model_warmup:
        raise Rejected("config has no model_warmup: the first requests after the swap would pay for a cold model")
    ids, mask, labels = held_out(repo)
    run = check_artifact(version_dir.parent.name, config, version_dir, ids, mask)
    if limits is None:  # rollback: the target served before; an accuracy gate must not block the way back
        return "loads, parity passed"
    min_accuracy, max_drop = limits
    batch = max(config.max_batch_size, 1)
    candidate = score(run, ids, mask, labels, batch)
    if candidate < min_accuracy:
        raise Rejected(f"held-out accuracy {candidate:.4f} is below the threshold {min_accuracy}")
    report = f"held-out accuracy {candidate:.4f}"
    if live is not None:
        live_config = read_config(live.parent)
        current = score(load_runner(live_config, live), ids, mask, labels, batch)
        if candidate < current - max_drop:
            raise Rejected(f"held-out accuracy {candidate:.4f} is more than {max_drop} under the live {current:.4f}")
        report += f" (live version {live.name}: {current:.4f})"
    return report
