"""What the ensembles take and return, independent of protocol: request tensors in, Predictions out."""

from dataclasses import dataclass

import numpy as np

TEXT_MODEL = "feedback_text"
IDS_MODEL = "feedback"
TOKENIZER_MODEL = "tokenizer"  # its config holds the longest comment the server takes (max_text_bytes)
FUSE_MODEL = "fuse"  # its config names the classes (parameter class_names) and the members (inputs <member>_probs)
MAX_BATCH = 64  # the ensembles' max_batch_size; longer inputs are sent in chunks of this many rows
SHM_OUTPUTS = ("PROBS", "MEMBER_PROBS")  # fixed-size outputs, read from a region when shm is on
INBAND_OUTPUTS = ("LABEL",)  # variable-size BYTES, always in the response


@dataclass(frozen=True)
class Prediction:
    label: str
    probabilities: dict[str, float]
    members: dict[str, dict[str, float]]  # each member's own probabilities, before fusion

    def as_dict(self) -> dict:
        return {"label": self.label, "probabilities": self.probabilities, "members": self.members}


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
            )
            for label, probs, member_probs in zip(
                outputs["LABEL"][:, 0], outputs["PROBS"], outputs["MEMBER_PROBS"], strict=True
            )
        ]


def text_inputs(texts: list[str]) -> dict[str, np.ndarray]:
    return {"TEXT": np.array([[text.encode()] for text in texts], dtype=object).reshape(len(texts), 1)}


def id_inputs(input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
    return {"INPUT_IDS": np.asarray(input_ids, np.int64), "ATTENTION_MASK": np.asarray(attention_mask, np.int64)}


def chunks(inputs: dict[str, np.ndarray], rows: int = MAX_BATCH) -> list[dict[str, np.ndarray]]:
    total = len(next(iter(inputs.values())))
    return [{name: array[start : start + rows] for name, array in inputs.items()} for start in range(0, total, rows)]


def concat(results: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.concatenate([r[name] for r in results]) for name in results[0]}


def datatype(array: np.ndarray) -> str:
    return "BYTES" if array.dtype == np.object_ else "INT64"
