"""infra/k8s rendered by the real kustomize (`kubectl kustomize`): every manifest parses, fits the others, and has
what production needs."""

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from harness.triton_stats import metrics_text
from infra.tools import kubectl
from server import ROOT
from tests.conftest import REPOSITORY, installed

pytestmark = pytest.mark.unit

K8S = ROOT / "infra" / "k8s"


def render(directory: Path) -> list[dict]:
    done = subprocess.run(
        [installed(kubectl), "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"kubectl kustomize {directory} failed: {done.stderr}"
    return [document for document in yaml.safe_load_all(done.stdout) if document]


def by_kind(documents: list[dict]) -> dict[str, dict]:
    kinds = {d["kind"]: d for d in documents}
    assert len(kinds) == len(documents), "one resource of each kind expected"
    return kinds


@pytest.fixture(scope="module", params=["base", "overlays/gpu"])
def rendered(request) -> dict[str, dict]:
    return by_kind(render(K8S / request.param))


def test_every_yaml_file_parses_and_names_itself():
    files = sorted(K8S.rglob("*.yaml"))
    assert len(files) >= 8
    for path in files:
        for document in yaml.safe_load_all(path.read_text()):
            assert document, f"{path}: empty document"
            if path.name not in ("kustomization.yaml", "prometheus-adapter-rules.yaml"):
                assert document["apiVersion"] and document["kind"] and document["metadata"]["name"], path


def test_resources_fit_together(rendered):
    assert set(rendered) == {"PersistentVolumeClaim", "Deployment", "Service", "PodDisruptionBudget",
                             "HorizontalPodAutoscaler", "NetworkPolicy"}  # fmt: skip
    assert {document["metadata"]["namespace"] for document in rendered.values()} == {"feedback"}
    deployment = rendered["Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in (
        deployment["spec"]["selector"]["matchLabels"],
        rendered["Service"]["spec"]["selector"],
        rendered["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        rendered["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"],
    ):
        assert selector.items() <= pod_labels.items() and "app.kubernetes.io/name" in selector
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    named_ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert named_ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert {port["targetPort"] for port in rendered["Service"]["spec"]["ports"]} == set(named_ports)
    [ingress] = rendered["NetworkPolicy"]["spec"]["ingress"]
    assert {port["port"] for port in ingress["ports"]} == set(named_ports)  # only Triton's ports take traffic
    target = rendered["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert (
        rendered["HorizontalPodAutoscaler"]["spec"]["minReplicas"]
        > rendered["PodDisruptionBudget"]["spec"]["maxUnavailable"]
    )
    [volume] = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v]
    assert volume["persistentVolumeClaim"]["claimName"] == rendered["PersistentVolumeClaim"]["metadata"]["name"]


def test_server_pod_is_probed_limited_and_locked_down(rendered):
    pod = rendered["Deployment"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == "feedback-triton:24.10" and "command" not in container  # the image's entrypoint
    for probe in ("readinessProbe", "livenessProbe"):  # the canary, server/probe.py, copied into the image
        assert container[probe]["exec"]["command"][:3] == ["python3", "-m", "server.probe"]
        assert container[probe]["timeoutSeconds"] > float(container[probe]["exec"]["command"][-1])
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys() <= container["resources"]["limits"].keys()
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    [key] = [e for e in container["env"] if e["name"] == "TRITON_ADMIN_KEY"]
    assert "secretKeyRef" in key["valueFrom"] and "value" not in key  # from a Secret, never in the manifests
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "model-repository"]
    assert mount["mountPath"] == "/srv/feedback/model_repository" and mount["readOnly"] is True


def test_gpu_overlay_changes_only_placement_and_repository():
    base, gpu = by_kind(render(K8S / "base"))["Deployment"], by_kind(render(K8S / "overlays/gpu"))["Deployment"]
    pod = gpu["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert [m["subPath"] for m in container["volumeMounts"] if m["name"] == "model-repository"] == ["gpu"]
    [base_container] = base["spec"]["template"]["spec"]["containers"]
    for key in ("image", "env", "ports", "readinessProbe", "livenessProbe", "startupProbe", "securityContext"):
        assert container[key] == base_container[key], key
    assert len(container["volumeMounts"]) == len(base_container["volumeMounts"])


def test_hpa_metric_is_the_adapter_rule_over_metrics_triton_exports(server):
    hpa = yaml.safe_load((K8S / "base" / "hpa.yaml").read_text())
    [rule] = yaml.safe_load((K8S / "prometheus-adapter-rules.yaml").read_text())["rules"]
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == rule["name"]["as"]
    exported = metrics_text(server.ports.metrics)
    for metric in set(re.findall(r"nv_\w+", rule["metricsQuery"] + rule["seriesQuery"])):
        assert f"# TYPE {metric} " in exported, metric
    for models in re.findall(r'model=~"([^"]+)"', rule["metricsQuery"]):
        for model in models.split("|"):
            assert (REPOSITORY / model).is_dir() and f'model="{model}"' in exported, model
