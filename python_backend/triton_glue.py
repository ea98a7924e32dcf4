"""The one place that talks to triton_python_backend_utils: config parsing, and batched execute()."""

import json
from collections.abc import Callable

import numpy as np
import triton_python_backend_utils as pb_utils


class ModelConfig:
    """What every model.py reads from Triton's `args` in initialize()."""

    def __init__(self, args: dict):
        self.raw = json.loads(args["model_config"])
        self.name = self.raw["name"]
        self.version_dir = f"{args['model_repository']}/{args['model_version']}"
        self.inputs = [tensor["name"] for tensor in self.raw["input"]]
        self.outputs = [tensor["name"] for tensor in self.raw["output"]]
        self.parameters = {key: value["string_value"] for key, value in self.raw.get("parameters", {}).items()}
        self.on_gpu = args["model_instance_kind"] == "GPU"
        self.device_id = int(args["model_instance_device_id"])

    def parameter(self, key: str, default: str | None = None) -> str:
        if key in self.parameters:
            return self.parameters[key]
        if default is None:
            raise pb_utils.TritonModelException(f"{self.name}: config.pbtxt needs parameter '{key}'")
        return default

    def artifact(self, default_name: str) -> str:
        return f"{self.version_dir}/{self.raw.get('default_model_filename') or default_name}"


def execute_batched(
    requests: list,
    config: ModelConfig,
    parse: Callable[..., list[np.ndarray]],
    compute: Callable[..., list[np.ndarray]],
) -> list:
    """One response per request: outputs named as in the config, or an error for that request alone."""
    from python_backend.batching import run_batched
    from python_backend.errors import BadRequest

    inputs = [[pb_utils.get_input_tensor_by_name(r, name).as_numpy() for name in config.inputs] for r in requests]
    responses = []
    for result in run_batched(inputs, parse, compute):
        if isinstance(result, Exception):
            code = pb_utils.TritonError.INVALID_ARG if isinstance(result, BadRequest) else pb_utils.TritonError.INTERNAL
            error = pb_utils.TritonError(f"{config.name}: {result}", code)
            responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
        else:
            tensors = [pb_utils.Tensor(name, array) for name, array in zip(config.outputs, result, strict=True)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
    return responses
