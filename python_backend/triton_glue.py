"""The one place that talks to triton_python_backend_utils: config parsing, responses, and custom metrics."""

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


class TenantMetrics:
    """Prometheus counts of the tenant heads' answers, `feedback_tenant_comments_total{tenant,label}`, and the heads
    held, `feedback_tenant_heads{what=held|bytes|reads}`. The first `named` tenants answered get series of their own
    and later ones count as "other": the number of series stays bounded whatever the number of tenants."""

    OTHER = "other"

    def __init__(self, named: int):
        self.limit, self.named = named, set()
        # The families are kept: a Metric fails once its family is gone.
        self.comments = pb_utils.MetricFamily(
            name="feedback_tenant_comments_total",
            description="Comments answered by a tenant head, by tenant (or 'other') and label",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.heads = pb_utils.MetricFamily(
            name="feedback_tenant_heads",
            description="Tenant heads in memory (held), their bytes, and head files read since load (reads)",
            kind=pb_utils.MetricFamily.GAUGE,
        )
        self.counters: dict[tuple[str, str], object] = {}
        self.gauges = {what: self.heads.Metric(labels={"what": what}) for what in ("held", "bytes", "reads")}
        self.last: dict[str, int] = {}

    def count(self, tenant: str, labels: np.ndarray) -> None:
        if tenant not in self.named and len(self.named) < self.limit:
            self.named.add(tenant)
        for label, times in zip(*np.unique(labels.ravel(), return_counts=True), strict=True):
            key = (tenant, label.decode()) if tenant in self.named else (self.OTHER, self.OTHER)
            if key not in self.counters:
                self.counters[key] = self.comments.Metric(labels={"tenant": key[0], "label": key[1]})
            self.counters[key].increment(int(times))

    def held(self, heads: int, nbytes: int, reads: int) -> None:
        """The gauges, sent only when they change (each call is a message to tritonserver)."""
        for what, value in (("held", heads), ("bytes", nbytes), ("reads", reads)):
            if self.last.get(what) != value:
                self.gauges[what].set(value)
                self.last[what] = value
