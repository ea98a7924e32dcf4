"""Python-based stand-in for Triton's native onnxruntime backend (which the PyPI tritonserver build lacks).

Serves any config with `platform: "onnxruntime_onnx"` unchanged; in the NGC container the native backend takes over.
When the config has `vocab_size` and `max_seq_len` parameters, inputs are (token ids, attention mask) and are checked.
"""

import onnxruntime as ort
import triton_python_backend_utils as pb_utils

from python_backend.devices import onnxruntime_providers
from python_backend.triton_glue import ModelConfig, execute_batched
from python_backend.validation import token_parser


class TritonPythonModel:
    def initialize(self, args):
        self.config = ModelConfig(args)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(self.config.parameter("intra_op_thread_count", "1"))
        options.inter_op_num_threads = 1
        providers = onnxruntime_providers(self.config.raw, self.config.on_gpu, self.config.device_id)
        self.session = ort.InferenceSession(self.config.artifact("model.onnx"), options, providers=providers)
        pb_utils.Logger.log_info(f"{self.config.name}: onnxruntime providers {self.session.get_providers()}")
        if self.config.on_gpu and self.session.get_providers() == ["CPUExecutionProvider"]:
            pb_utils.Logger.log_warn(f"{self.config.name}: GPU instance, but onnxruntime has no usable CUDA: on CPU")
        self.parse = token_parser(self.config.parameters)

    def execute(self, requests):
        def compute(*arrays):
            return self.session.run(self.config.outputs, dict(zip(self.config.inputs, arrays, strict=True)))

        return execute_batched(requests, self.config, self.parse, compute)
