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


def respond(config: ModelConfig, result: list[np.ndarray] | Exception):
    """A request's response: its outputs named as in the config, or its error (INVALID_ARG for a BadRequest).

    A result may stop short of the config's last outputs: those are the optional ones, which only some ensembles ask
    for (the fuse step's FEATURES)."""
    from python_backend.errors import BadRequest

    if isinstance(result, Exception):
        code = pb_utils.TritonError.INVALID_ARG if isinstance(result, BadRequest) else pb_utils.TritonError.INTERNAL
        error = pb_utils.TritonError(f"{config.name}: {result}", code)
        return pb_utils.InferenceResponse(output_tensors=[], error=error)
    names = config.outputs[: len(result)]
    tensors = [pb_utils.Tensor(name, array) for name, array in zip(names, result, strict=True)]
    return pb_utils.InferenceResponse(output_tensors=tensors)


def inputs_of(request, config: ModelConfig) -> list[np.ndarray | None]:
    """The request's inputs in config order; None for an optional input it did not send."""
    tensors = [pb_utils.get_input_tensor_by_name(request, name) for name in config.inputs]
    return [tensor.as_numpy() if tensor is not None else None for tensor in tensors]


def execute_each(requests: list, config: ModelConfig, compute: Callable[..., list[np.ndarray]]) -> list:
    """One response per request, each computed alone: for steps whose outputs a request's neighbours must not
    shape (the tokenizer pads a request's rows to its own longest, not to the batch's)."""
    responses = []
    for request in requests:
        try:
            result = compute(*inputs_of(request, config))
        except Exception as error:  # noqa: BLE001 - report any failure to that request, keep the instance alive
            result = error
        responses.append(respond(config, result))
    return responses


def execute_batched(
    requests: list,
    config: ModelConfig,
    parse: Callable[..., list[np.ndarray]],
    compute: Callable[..., list[np.ndarray]],
) -> list:
    """One response per request: outputs named as in the config, or an error for that request alone."""
    from python_backend.batching import run_batched

    return [respond(config, result) for result in run_batched([inputs_of(r, config) for r in requests], parse, compute)]
