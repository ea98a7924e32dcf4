"""The names the server, the clients, export, release and the Python-backend steps agree on, in one place.

Standard library only, and importing nothing of the project: the canary probe runs with it alone in NVIDIA's image
(infra/Dockerfile), and the `feedback` console script installs it beside `client`.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent  # the checkout, or /srv/feedback in the images
REPOSITORY = ROOT / "model_repository"  # the checkout's: what `make serve` serves and `make export` writes

CANARY_FILE = "canary.json"  # written by export: texts, their token ids and mask, and the labels served for them
TENANTS_FILE = "tenants.json"  # the repository's tenant -> replaced members mapping (python_backend/tenants.py)

# The header that carries the key of the server's restricted endpoints (repository, shared memory, trace,
# logging); over gRPC, tritonserver expects it with the prefix client.admin.admin_headers adds.
ADMIN_HEADER = "triton-admin-key"


def tenant_canary_file(tenant: str) -> str:
    """A tenant's canary, as CANARY_FILE, from the tenant's own models (release/canary.py)."""
    return f"canary__{tenant}.json"


# A tenant head's canary (release/heads.py): texts and the labels its head answers, for `feedback_tenant`.
HEAD_CANARY_FILE = "canary__head__{tenant}.json"
