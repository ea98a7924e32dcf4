"""The operations tools the tests and `make monitor` run for real, installed by the project's own files when missing.

kubectl: the one on PATH (this image's 1.32, kustomize 5.5), else Debian's kubernetes-client (1.20, kustomize 2.0.3;
the manifests keep to what both render alike). prometheus and promtool: Debian's prometheus package (2.42).
"""

import shutil

from server.debian import ensure


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found:
        return found
    ensure({"/usr/bin/kubectl": "kubernetes-client"}, "rendering infra/k8s with kubectl kustomize")
    return "/usr/bin/kubectl"


def prometheus() -> tuple[str, str]:
    """(prometheus, promtool)."""
    ensure({"/usr/bin/prometheus": "prometheus", "/usr/bin/promtool": "prometheus"}, "running Prometheus")
    return "/usr/bin/prometheus", "/usr/bin/promtool"
