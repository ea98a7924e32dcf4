"""`make monitor`: Debian's Prometheus scraping an embedded tritonserver with the project's own scrape config.

python -m infra.monitor [--metrics HOST:PORT] [--port 9090]

The compose stack's config (infra/prometheus/prometheus.yml) with its target pointed at the server's metrics port
and, as the Kubernetes pod scrape would add, `namespace` and `pod` labels, so that the HPA adapter's rule
(infra/k8s/prometheus-adapter-rules.yaml) and the Grafana dashboard's queries answer here as they will in a cluster.
The tests (tests/test_monitoring.py) run the same functions.
"""

import argparse
import json
import os
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from infra.tools import prometheus

DEPLOY = Path(__file__).resolve().parent
SCRAPE_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
ADAPTER_RULES = DEPLOY / "k8s" / "prometheus-adapter-rules.yaml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "triton.json"
LOCAL_LABELS = {"namespace": "local", "pod": "triton-local"}


def scrape_config(metrics: str, labels: dict[str, str], interval: str) -> str:
    """The project's scrape config, scraping `metrics` (host:port) every `interval` with `labels` on its series."""
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    config["global"]["scrape_interval"] = interval
    [job] = config["scrape_configs"]
    job["static_configs"] = [{"targets": [metrics], "labels": labels}]
    return yaml.safe_dump(config, sort_keys=False)


def start(config: Path, data: Path, port: int, log: Path) -> subprocess.Popen:
    binary, _ = prometheus()
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={data}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with open(log, "ab") as output:
        return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)


def wait_ready(process: subprocess.Popen, url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"prometheus at {url} not ready after {timeout} s")


def query(url: str, expression: str) -> list[dict]:
    """An instant query through the HTTP API: the result vector ([{"metric": {...}, "value": [t, "v"]}, ...])."""
    with urllib.request.urlopen(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expression})}", timeout=10) as a:
        answer = json.load(a)
    if answer["status"] != "success":
        raise RuntimeError(f"{expression}: {answer}")
    return answer["data"]["result"]


def adapter_query(namespace: str, pods: list[str]) -> tuple[str, str]:
    """The HPA metric's name and its query, as prometheus-adapter fills in its rule for pods of a namespace."""
    [rule] = yaml.safe_load(ADAPTER_RULES.read_text())["rules"]
    matchers = f'namespace="{namespace}",pod=~"{"|".join(pods)}"'
    expression = rule["metricsQuery"].replace("<<.GroupBy>>", "pod").replace("<<.LabelMatchers>>", matchers)
    return rule["name"]["as"], expression


def dashboard_queries() -> dict[str, str]:
    """Panel title -> PromQL, for every panel of the Grafana dashboard."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return {panel["title"]: target["expr"] for panel in panels for target in panel.get("targets", [])}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m infra.monitor", description=__doc__)
    parser.add_argument("--metrics", default=f"127.0.0.1:{os.environ.get('METRICS_PORT', '8002')}")
    parser.add_argument("--port", type=int, default=9090)
    args = parser.parse_args()
    folder = DEPLOY.parent / "build" / "prometheus"
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "prometheus.yml"
    config.write_text(scrape_config(args.metrics, LOCAL_LABELS, "5s"))
    process = start(config, folder / "data", args.port, folder / "prometheus.log")
    url = f"http://127.0.0.1:{args.port}"
    try:
        wait_ready(process, url)
        name, expression = adapter_query(LOCAL_LABELS["namespace"], [LOCAL_LABELS["pod"]])
        print(f"Prometheus on {url}, scraping {args.metrics}; log {folder / 'prometheus.log'}")
        print(f"the HPA metric {name}: {expression}", flush=True)
        process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        process.terminate()
        process.wait(timeout=30)


if __name__ == "__main__":
    main()
