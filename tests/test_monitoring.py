"""Prometheus for real: Debian's prometheus scrapes a tritonserver with the project's scrape config and answers the
HPA adapter rule's query and every Grafana panel's query; promtool checks the config (issue #16)."""

import subprocess
import threading
import time

import pytest

from client.feedback import FeedbackClient
from infra import monitor
from infra.tools import prometheus
from server.launch import free_ports
from tests.conftest import REPOSITORY, installed

POD = {"namespace": "test", "pod": "triton-test-0"}
SCRAPE_SECONDS = 1
GPU_PANELS = ("nv_gpu_",)  # a CPU server exports no GPU series


@pytest.fixture(scope="module")
def prometheus_url(server, tmp_path_factory):
    installed(prometheus)
    folder = tmp_path_factory.mktemp("prometheus")
    config = folder / "prometheus.yml"
    config.write_text(monitor.scrape_config(f"127.0.0.1:{server.ports.metrics}", POD, f"{SCRAPE_SECONDS}s"))
    (port,) = free_ports(1)
    process = monitor.start(config, folder / "data", port, folder / "prometheus.log")
    url = f"http://127.0.0.1:{port}"
    try:
        monitor.wait_ready(process, url)
        deadline = time.monotonic() + 30
        while not monitor.query(url, 'up{job="triton"} == 1'):
            assert time.monotonic() < deadline, (folder / "prometheus.log").read_text()[-2000:]
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def load(server, seconds: float, clients: int = 8) -> None:
    """Concurrent batch-1 classify calls, so that requests queue in the members' dynamic batchers."""
    stop = time.monotonic() + seconds

    def client():
        with FeedbackClient(server.grpc_url) as feedback:
            while time.monotonic() < stop:
                feedback.classify(["the invoice charged me twice"])

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def hpa_metric(url: str) -> dict[str, float]:
    _, expression = monitor.adapter_query(POD["namespace"], [POD["pod"]])
    return {series["metric"]["pod"]: float(series["value"][1]) for series in monitor.query(url, expression)}


def test_adapter_rule_gives_one_value_per_pod_and_more_under_load(server, prometheus_url):
    time.sleep(3 * SCRAPE_SECONDS)  # a few idle scrapes: rate() needs two samples
    idle = hpa_metric(prometheus_url)
    load(server, seconds=6)
    time.sleep(2 * SCRAPE_SECONDS)  # scrapes after the load
    loaded = hpa_metric(prometheus_url)
    print(f"triton_queue_us_per_request: idle {idle}, under load {loaded}")
    assert list(loaded) == [POD["pod"]], loaded
    assert loaded[POD["pod"]] > 0 and loaded[POD["pod"]] > idle.get(POD["pod"], 0.0)


def test_every_dashboard_panel_query_returns_data(server, prometheus_url):
    load(server, seconds=2)
    time.sleep(2 * SCRAPE_SECONDS)
    skipped = []
    for title, expression in monitor.dashboard_queries().items():
        result = monitor.query(prometheus_url, expression)
        if any(prefix in expression for prefix in GPU_PANELS):
            skipped.append(title)
            continue
        assert result, f"panel {title!r}: {expression} returned no data"
        assert any(series["metric"].get("model") == "feedback" for series in result), (title, result)
    print(f"GPU panels not checked on this CPU machine: {skipped}")
    assert len(skipped) == 2


def test_promtool_accepts_the_scrape_configs(tmp_path):
    _, promtool = installed(prometheus)
    generated = tmp_path / "prometheus.yml"
    generated.write_text(monitor.scrape_config("127.0.0.1:8002", POD, "5s"))
    for config in (monitor.SCRAPE_CONFIG, generated):
        done = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    # No alerting or recording rules are shipped: the adapter rule is prometheus-adapter's, evaluated above.
    assert not list(REPOSITORY.parent.glob("infra/prometheus/*rules*"))
