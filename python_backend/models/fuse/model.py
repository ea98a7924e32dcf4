"""Triton model `fuse`: one `<member>_probs` input per member, `input_errors` and the optional `windows` -> PROBS,
LABEL, MEMBER_PROBS, WINDOWS (one row per comment). In `feedback_tenant`, also the optional `embedding` and `tenant`
(one per row) -> the tenant head's TENANT_PROBS, TENANT_LABEL and TENANT_CLASSES (python_backend/heads.py)."""

from pathlib import Path

import triton_python_backend_utils as pb_utils

from python_backend.batching import run_batched
from python_backend.fuse import Fuse
from python_backend.heads import HeadCache, request_tenant
from python_backend.triton_glue import ModelConfig, TenantMetrics, inputs_of, respond


class TritonPythonModel:
    def initialize(self, args):
        self.config = ModelConfig(args)
        try:
            self.fuse = Fuse(self.config.inputs, self.config.parameters, self.config.version_dir)
            budget = int(float(self.config.parameter("head_memory_mb")) * 2**20)
            self.metric_tenants = int(self.config.parameter("metric_tenants"))
        except (ValueError, OSError, KeyError) as error:
            raise pb_utils.TritonModelException(f"{self.config.name}: {error}") from error
        self.heads = HeadCache(Path(args["model_repository"]).parent, budget)
        self.metrics: TenantMetrics | None = None  # made at the first tenant request: untagged traffic never uses it

    def execute(self, requests):
        """One batched computation for the whole dynamic batch (python_backend/batching.py), then each tenant's
        head once for all its requests."""
        named = [dict(zip(self.config.inputs, inputs_of(r, self.config), strict=True)) for r in requests]
        results = run_batched([list(arrays.values()) for arrays in named], self.parse, self.fuse.outputs)
        tenants = [arrays.get("tenant") for arrays in named]
        results = self.heads.with_tenant_answers(results, tenants)
        if any(tenant is not None for tenant in tenants):
            # Only for tenant traffic: each metric call is a message to tritonserver.
            self.metrics = self.metrics or TenantMetrics(self.metric_tenants)
            for tenant, result in zip(tenants, results, strict=True):
                if tenant is not None and not isinstance(result, Exception):
                    self.metrics.count(request_tenant(tenant), result[5])
            self.metrics.held(len(self.heads.heads), self.heads.nbytes, self.heads.loads)
        return [respond(self.config, result) for result in results]

    def parse(self, *arrays):
        return self.fuse.stacked(dict(zip(self.config.inputs, arrays, strict=True)))
