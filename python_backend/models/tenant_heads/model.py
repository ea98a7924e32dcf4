"""Triton model `tenant_heads`: FEATURES (the fuse step's, [comments, width]) and TENANT ([comments, 1], one tenant
per request) -> TENANT_PROBS and TENANT_LABEL in that tenant's own label set (python_backend/heads.py).

Counts each tenant's comments by label in Prometheus (`feedback_tenant_comments_total`); the first
`metric_tenants` tenants this instance answers have series of their own, later ones count as "other", so the
number of series stays bounded whatever the number of tenants. `feedback_tenant_heads` reports the heads held, their
bytes, and the head files read so far (a read beyond the tenants' count is a re-read: a changed or evicted head).
"""

from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from python_backend.heads import HeadCache
from python_backend.triton_glue import ModelConfig, inputs_of, respond

OTHER = "other"


class TritonPythonModel:
    def initialize(self, args):
        self.config = ModelConfig(args)
        budget = int(float(self.config.parameter("head_memory_mb")) * 2**20)
        self.heads = HeadCache(Path(args["model_repository"]).parent, budget)
        self.metric_tenants = int(self.config.parameter("metric_tenants"))
        self.family = pb_utils.MetricFamily(
            name="feedback_tenant_comments_total",
            description="Comments answered by a tenant head, by tenant (or 'other') and label",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.counters: dict[tuple[str, str], object] = {}
        self.named: set[str] = set()
        self.cache_family = pb_utils.MetricFamily(  # kept: its Metrics fail once the family is gone
            name="feedback_tenant_heads",
            description="Tenant heads in memory (held), their bytes, and head files read since load (reads)",
            kind=pb_utils.MetricFamily.GAUGE,
        )
        self.cache_gauges = {
            what: self.cache_family.Metric(labels={"what": what}) for what in ("held", "bytes", "reads")
        }

    def execute(self, requests):
        results = self.heads.answer([tuple(inputs_of(request, self.config)) for request in requests])
        for request, result in zip(requests, results, strict=True):
            if not isinstance(result, Exception):
                self.count(pb_utils.get_input_tensor_by_name(request, "TENANT").as_numpy()[0, 0], result[1])
        for what, value in (("held", len(self.heads.heads)), ("bytes", self.heads.nbytes), ("reads", self.heads.loads)):
            self.cache_gauges[what].set(value)
        return [respond(self.config, result) for result in results]

    def count(self, tenant: bytes, labels: np.ndarray) -> None:
        tenant = tenant.decode() if isinstance(tenant, bytes) else str(tenant)
        if tenant not in self.named and len(self.named) < self.metric_tenants:
            self.named.add(tenant)
        for label, times in zip(*np.unique(labels.ravel(), return_counts=True), strict=True):
            key = (tenant, label.decode()) if tenant in self.named else (OTHER, OTHER)
            if key not in self.counters:
                self.counters[key] = self.family.Metric(labels={"tenant": key[0], "label": key[1]})
            self.counters[key].increment(int(times))
