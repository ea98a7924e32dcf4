"""Triton model `floor_python` (make bench only): the least a Python-backend step can do, so the bench measures what
a hand-off to a stub costs by itself. TOKENS = the number of real tokens per row."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            mask = pb_utils.get_input_tensor_by_name(request, "ATTENTION_MASK").as_numpy()
            tokens = mask.sum(axis=1, keepdims=True, dtype=np.int64)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("TOKENS", tokens)]))
        return responses
