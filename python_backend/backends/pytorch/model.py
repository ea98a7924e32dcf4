"""Python-based stand-in for Triton's native libtorch backend (which the PyPI tritonserver build lacks).

Serves `platform: "pytorch_libtorch"` configs unchanged. As in the native backend, tensors are named
`<name>__<index>` and passed to forward() / read from its result in index order.
"""

import torch
import triton_python_backend_utils as pb_utils

from python_backend.triton_glue import ModelConfig, execute_batched
from python_backend.validation import token_parser


class TritonPythonModel:
    def initialize(self, args):
        self.config = ModelConfig(args)
        for names in (self.config.inputs, self.config.outputs):
            if [name.rsplit("__", 1)[-1] for name in names] != [str(i) for i in range(len(names))]:
                raise pb_utils.TritonModelException(
                    f"{self.config.name}: tensor names must end in __0, __1, ... in config order, got {names}"
                )
        torch.set_num_threads(int(self.config.parameter("INTRA_OP_THREAD_COUNT", "1")))
        on_gpu = self.config.on_gpu and torch.cuda.is_available()
        if self.config.on_gpu and not on_gpu:
            pb_utils.Logger.log_warn(f"{self.config.name}: GPU instance, but this torch build has no CUDA: on CPU")
        self.device = torch.device(f"cuda:{self.config.device_id}" if on_gpu else "cpu")
        self.model = torch.jit.load(self.config.artifact("model.pt"), map_location=self.device).eval()
        pb_utils.Logger.log_info(f"{self.config.name}: torch.jit on {self.device}")
        self.parse = token_parser(self.config.parameters)

    def execute(self, requests):
        def compute(*arrays):
            with torch.inference_mode():
                result = self.model(*(torch.from_numpy(a).to(self.device) for a in arrays))
            outputs = result if isinstance(result, tuple) else (result,)
            return [output.cpu().numpy() for output in outputs]

        return execute_batched(requests, self.config, self.parse, compute)
