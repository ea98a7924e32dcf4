"""The header that tritonserver's restricted endpoints (model repository, shared memory, trace, logging) check.

The server is started with `--{grpc,http}-restricted-...=<apis>:triton-admin-key=<key>` (server/flags.py); its gRPC
side checks the header under a fixed prefix, so the name a client sends depends on the protocol.
"""

from conventions import ADMIN_HEADER


def admin_headers(protocol: str, admin_key: str) -> dict[str, str]:
    prefix = "triton-grpc-protocol-" if protocol == "grpc" else ""
    return {prefix + ADMIN_HEADER: admin_key}
