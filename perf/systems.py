"""The systems a bench run measures, each driven with batch-1 requests at fixed concurrency.

The real task first: a comment's text in, its label out, over HTTP/JSON, against the monolith it replaces and a
batched pipeline server with the same members, all driven by wrk (perf/wrk.py). Then Triton's own views (gRPC, shared
memory, token ids in, batching off, its floors), driven by the real perf_analyzer.
"""

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class System:
    name: str
    label: str
    server: str  # which server processes serve it (perf/__main__.py starts each once)
    model: str
    protocol: str  # grpc: binary tensors; http: JSON tensors both ways (what the v0/v1 apps speak)
    shm: bool = False  # inputs and outputs through system shared memory
    driver: str = "perf_analyzer"  # or "wrk": the one client every HTTP server can be asked with

    def request(self, text: str) -> tuple[str, str]:
        """wrk's path and JSON body for one comment: KServe v2 for Triton and v0, mosec's own for the pipeline."""
        if self.server == "pipeline":
            return "/inference", json.dumps({"text": text})
        tensor = {"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": [text]}
        return f"/v2/models/{self.model}/infer", json.dumps({"inputs": [tensor]})


TEXT_IN = "triton_text_http"  # the served system the real task's targets are set for
SYSTEMS = (
    System(TEXT_IN, "Triton `feedback_text`, HTTP/JSON", "triton", "feedback_text", "http", driver="wrk"),
    System(
        "v0_text",
        "v0 monolith (FastAPI, gunicorn, a worker per core), text in, HTTP/JSON",
        "v0",
        "feedback_text",
        "http",
        driver="wrk",
    ),
    System(
        "pipeline_text",
        "batched pipeline (mosec, a worker per core, batches of up to 32, 2 ms wait), text in, HTTP/JSON",
        "pipeline",
        "inference",
        "http",
        driver="wrk",
    ),
    System("triton_text_grpc", "Triton `feedback_text`, gRPC", "triton", "feedback_text", "grpc"),
    System(
        "triton_grpc_shm", "Triton `feedback` (token ids in), gRPC + system shm", "triton", "feedback", "grpc", shm=True
    ),
    System("triton_http_json", "Triton `feedback` (token ids in), HTTP/JSON", "triton", "feedback", "http"),
    System(
        "triton_grpc_shm_no_batching",
        "Triton `feedback`, gRPC + shm, dynamic batching off",
        "triton_no_batching",
        "feedback",
        "grpc",
        shm=True,
    ),
    System("v0_monolith", "v0 monolith, token ids in, HTTP/JSON", "v0", "feedback", "http"),
    System(
        "v1_fanout",
        "v1 fan-out (a FastAPI service per member + combiner, a worker per core each), token ids in, HTTP/JSON",
        "v1",
        "feedback",
        "http",
    ),
    # Triton's own floor on this machine (perf/floors.py): what a request costs with nearly nothing to compute.
    System(
        "floor_native",
        "floor: trivial ONNX model alone (native backend), gRPC + shm",
        "floors",
        "floor_native",
        "grpc",
        shm=True,
    ),
    System(
        "floor_python",
        "floor: no-op Python-backend model alone, gRPC + shm",
        "floors",
        "floor_python",
        "grpc",
        shm=True,
    ),
    System(
        "floor_ensemble",
        "floor: `feedback`'s graph, trivial steps (2 native members, no-op Python fuse), gRPC + shm",
        "floors",
        "floor_ensemble",
        "grpc",
        shm=True,
    ),
    System(
        "floor_ensemble_text",
        "floor: `feedback_text`'s graph, trivial steps (a no-op Python step in front), gRPC + shm",
        "floors",
        "floor_ensemble_text",
        "grpc",
        shm=True,
    ),
)
