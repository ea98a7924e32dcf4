"""The systems a bench run measures, each driven by the real perf_analyzer with batch-1 requests."""

from dataclasses import dataclass


@dataclass(frozen=True)
class System:
    name: str
    label: str
    server: str  # which server processes serve it (perf/__main__.py starts each once)
    model: str
    protocol: str  # grpc: binary tensors; http: JSON tensors both ways (what the v0/v1 apps speak)
    shm: bool = False  # inputs and outputs through system shared memory


SYSTEMS = (
    System("triton_grpc", "Triton `feedback`, gRPC", "triton", "feedback", "grpc"),
    System("triton_grpc_shm", "Triton `feedback`, gRPC + system shm", "triton", "feedback", "grpc", shm=True),
    System("triton_http_json", "Triton `feedback`, HTTP/JSON", "triton", "feedback", "http"),
    System("triton_text_grpc", "Triton `feedback_text` (text in), gRPC", "triton", "feedback_text", "grpc"),
    System(
        "triton_grpc_shm_no_batching",
        "Triton `feedback`, gRPC + shm, dynamic batching off",
        "triton_no_batching",
        "feedback",
        "grpc",
        shm=True,
    ),
    System(
        "v0_monolith",
        "v0 monolith (FastAPI, gunicorn with a uvicorn worker per core), HTTP/JSON",
        "v0",
        "feedback",
        "http",
    ),
    System(
        "v1_fanout",
        "v1 fan-out (a FastAPI service per member + combiner, a worker per core each), HTTP/JSON",
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
