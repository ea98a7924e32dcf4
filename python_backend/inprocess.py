"""The served ensembles' computation in one Python process, from the same repository files and the same code.

It is the reference the tests hold the server to, and the no-server limit the benchmarks compare against.
"""

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from google.protobuf import text_format
from tokenizers import Tokenizer
from tritonclient.grpc import model_config_pb2

from python_backend.fuse import labels, make_combiner, stack_members
from python_backend.text import encode


def read_config(model_dir: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def latest_version(model_dir: Path) -> Path:
    return max((p for p in model_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


class InProcessEnsemble:
    def __init__(self, repository: Path, threads: int = 1):
        self.tokenizer = Tokenizer.from_file(str(latest_version(repository / "tokenizer") / "tokenizer.json"))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.transformer = ort.InferenceSession(
            str(latest_version(repository / "transformer") / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        torch.set_num_threads(threads)
        self.textcnn = torch.jit.load(str(latest_version(repository / "textcnn") / "model.pt")).eval()
        fuse = read_config(repository / "fuse")
        parameters = {key: value.string_value for key, value in fuse.parameters.items()}
        self.class_names = parameters["class_names"].split(",")
        members = [tensor.name.removesuffix("_probs") for tensor in fuse.input]
        self.combine = make_combiner(members, parameters, str(latest_version(repository / "fuse")))

    def classify_ids(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        """PROBS, LABEL and MEMBER_PROBS, as the `feedback` ensemble returns them."""
        transformer = self.transformer.run(["PROBS"], {"INPUT_IDS": input_ids, "ATTENTION_MASK": attention_mask})[0]
        with torch.inference_mode():
            textcnn = self.textcnn(torch.from_numpy(input_ids), torch.from_numpy(attention_mask)).numpy()
        stacked = stack_members([transformer, textcnn], len(self.class_names))
        probs = self.combine(stacked)
        return {"PROBS": probs, "LABEL": labels(probs, self.class_names), "MEMBER_PROBS": stacked}

    def tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return encode(self.tokenizer, np.array(texts, dtype=object))

    def classify(self, texts: list[str]) -> dict[str, np.ndarray]:
        """What the `feedback_text` ensemble returns for these texts."""
        return self.classify_ids(*self.tokenize(texts))
