"""What the ensembles take and return, independent of protocol: request tensors in, Predictions out."""

from dataclasses import dataclass

import numpy as np

TEXT_MODEL = "feedback_text"
IDS_MODEL = "feedback"
TENANT_MODEL = (
    "feedback_tenant"  # TEXT and TENANT in: the default answer and the tenant head's (python_backend/heads.py)
)
TENANT_OUTPUTS = ("TENANT_PROBS", "TENANT_LABEL", "TENANT_CLASSES")
TOKENIZER_MODEL = "tokenizer"  # its config holds the longest comment the server takes (max_text_bytes)
FUSE_MODEL = "fuse"  # its config names the classes (parameter class_names) and the members (inputs <member>_probs)
MAX_BATCH = 64  # the ensembles' max_batch_size; longer inputs are sent in chunks of this many rows
# The server reads a long comment as windows, at most 256 per request (the tokenizer's max_rows): a window holds
# at least 190 new tokens, and a token at least one byte, so 32 KB of text and 64 comments make at most 236.
MAX_TEXT_BYTES = 32 * 1024
SHM_OUTPUTS = ("PROBS", "MEMBER_PROBS")  # fixed-size outputs, read from a region when shm is on
INBAND_OUTPUTS = ("LABEL", "WINDOWS")  # LABEL: variable-size BYTES; WINDOWS: a few bytes; always in the response


@dataclass(frozen=True)
class Prediction:
    label: str
    probabilities: dict[str, float]
    members: dict[str, dict[str, float]]  # each member's own probabilities, before fusion
    windows: int = 1  # how many windows of the encoder's length the comment was read as (its probabilities' mean)

    def as_dict(self) -> dict:
        return {
            "label": self.label,
            "probabilities": self.probabilities,
            "members": self.members,
            "windows": self.windows,
        }


@dataclass(frozen=True)
class TenantPrediction:
    """A tenant head's answer, in the tenant's own label set, and the default models' answer beside it."""

    tenant: str
    label: str
    probabilities: dict[str, float]
    default: Prediction

    def as_dict(self) -> dict:
        return {
            "tenant": self.tenant,
            "label": self.label,
            "probabilities": self.probabilities,
            "default": self.default.as_dict(),
        }


@dataclass(frozen=True)
class Schema:
    class_names: list[str]
    members: list[str]

    @classmethod
    def from_fuse_config(cls, config: dict) -> "Schema":
        """From the fuse model's config as JSON (gRPC wraps it in {"config": ...}, HTTP does not)."""
        config = config.get("config", config)
        names = config["parameters"]["class_names"]["string_value"].split(",")
        inputs = [tensor["name"] for tensor in config["input"]]  # `input_errors` is not a member
        return cls(names, [name.removesuffix("_probs") for name in inputs if name.endswith("_probs")])

    def output_shapes(self, rows: int) -> dict[str, list[int]]:
        return {
            "PROBS": [rows, len(self.class_names)],
            "MEMBER_PROBS": [rows, len(self.members), len(self.class_names)],
        }

    def predictions(self, outputs: dict[str, np.ndarray]) -> list[Prediction]:
        def named(probs: np.ndarray) -> dict[str, float]:
            return {name: float(p) for name, p in zip(self.class_names, probs, strict=True)}

        return [
            Prediction(
                label.decode(),
                named(probs),
                {member: named(p) for member, p in zip(self.members, member_probs, strict=True)},
                int(windows),
            )
            for label, probs, member_probs, windows in zip(
                outputs["LABEL"][:, 0], outputs["PROBS"], outputs["MEMBER_PROBS"], outputs["WINDOWS"][:, 0], strict=True
            )
        ]

    def tenant_predictions(self, outputs: dict[str, np.ndarray], tenant: str) -> list[TenantPrediction]:
        return [
            TenantPrediction(
                tenant,
                label.decode(),
                {name.decode(): float(p) for name, p in zip(names, probs, strict=True)},
                default,
            )
            for label, probs, names, default in zip(
                outputs["TENANT_LABEL"][:, 0],
                outputs["TENANT_PROBS"],
                outputs["TENANT_CLASSES"],
                self.predictions(outputs),
                strict=True,
            )
        ]


def text_inputs(texts: list[str]) -> dict[str, np.ndarray]:
    return {"TEXT": np.array([[text.encode()] for text in texts], dtype=object).reshape(len(texts), 1)}


def tenant_inputs(texts: list[str], tenant: str) -> dict[str, np.ndarray]:
    return text_inputs(texts) | {"TENANT": np.full((len(texts), 1), tenant.encode(), dtype=object)}


def id_inputs(input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
    return {"INPUT_IDS": np.asarray(input_ids, np.int64), "ATTENTION_MASK": np.asarray(attention_mask, np.int64)}


def chunks(inputs: dict[str, np.ndarray], rows: int = MAX_BATCH) -> list[dict[str, np.ndarray]]:
    """Requests of at most `rows` rows, and for TEXT at most MAX_TEXT_BYTES (a request of one comment may be longer:
    the server refuses it alone if it is over its own limit)."""
    total = len(next(iter(inputs.values())))
    sizes = [len(row[0]) for row in inputs["TEXT"]] if "TEXT" in inputs else [0] * total
    cuts, start, used = [], 0, 0
    for index, size in enumerate(sizes):
        if index > start and (index - start == rows or used + size > MAX_TEXT_BYTES):
            cuts.append((start, index))
            start, used = index, 0
        used += size
    cuts.append((start, total))
    return [{name: array[begin:end] for name, array in inputs.items()} for begin, end in cuts if end > begin]


def concat(results: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.concatenate([r[name] for r in results]) for name in results[0]}


def datatype(array: np.ndarray) -> str:
    return "BYTES" if array.dtype == np.object_ else "INT64"
