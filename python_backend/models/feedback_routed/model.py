"""Triton model `feedback_routed`: the `feedback` ensemble's inputs plus an optional TENANT [b,1] (one tenant per
request). A tenant listed in tenants.json is answered by its own ensemble `<ensemble>__<tenant>`, anyone else by the
default ensemble; a malformed tenant id gets INVALID_ARGUMENT. One BLS call per request (see README for its cost)."""

import asyncio
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from conventions import TENANTS_FILE
from python_backend.errors import BadRequest
from python_backend.tenants import TenantTable
from python_backend.triton_glue import ModelConfig


class TritonPythonModel:
    def initialize(self, args):
        self.config = ModelConfig(args)
        self.base = self.config.parameter("ensemble")
        self.forwarded = [name for name in self.config.inputs if name != "TENANT"]
        self.table = TenantTable(Path(args["model_repository"]).parent / TENANTS_FILE)

    async def execute(self, requests):
        return await asyncio.gather(*(self.route(request) for request in requests))

    def tenant(self, request) -> str:
        tensor = pb_utils.get_input_tensor_by_name(request, "TENANT")
        if tensor is None:
            return ""
        rows = {
            value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            for value in np.ravel(tensor.as_numpy())
        }
        if len(rows) != 1:
            raise BadRequest(f"TENANT: one tenant per request, got {len(rows)} different values")
        return rows.pop()

    async def route(self, request):
        try:
            target = self.table.ensemble(self.base, self.tenant(request))
        except BadRequest as error:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error), pb_utils.TritonError.INVALID_ARG))
        inputs = [pb_utils.get_input_tensor_by_name(request, name) for name in self.forwarded]
        call = pb_utils.InferenceRequest(model_name=target, inputs=inputs, requested_output_names=self.config.outputs)
        response = await call.async_exec()
        if response.has_error():
            return pb_utils.InferenceResponse(error=response.error())
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.get_output_tensor_by_name(response, name) for name in self.config.outputs]
        )
