"""Per-customer models: `deploy --tenant` and the `feedback_routed` model, against a real tritonserver."""

import json
import re
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conventions import TENANTS_FILE
from harness import candidates
from harness.steady_load import LOAD_ROWS, TRANSFORMER_COLUMN, answers
from python_backend.errors import BadRequest
from python_backend.tenants import TenantTable, check_tenant
from release.deploy import deploy
from release.gates import Rejected, held_out
from server import probe
from server.launch import free_ports
from tests.conftest import REPOSITORY, run_server
from tests.test_deploy import copy_repository

REQUESTS = 5  # per client thread
SHIFTS = {"acme": 0.25, "globex": -0.25}  # two customers whose own transformers answer differently


@pytest.mark.parametrize("tenant", ["a", "acme", "acme-eu-1", "x" * 32])
def test_valid_tenant_ids(tenant):
    assert check_tenant(tenant) == tenant


@pytest.mark.parametrize("tenant", ["", "../fuse", "a/b", "a.b", "a__b", "Acme", "-a", "a-", "x" * 33, "a b"])
def test_invalid_tenant_ids_are_refused(tenant):
    with pytest.raises(BadRequest, match="expected 1-32 lowercase letters"):
        check_tenant(tenant)


def test_tenant_table_follows_the_file(tmp_path):
    table = TenantTable(tmp_path / TENANTS_FILE)
    assert table.ensemble("feedback", "acme") == "feedback"  # no file: everyone gets the default
    (tmp_path / TENANTS_FILE).write_text(json.dumps({"acme": ["transformer"]}))
    assert table.ensemble("feedback", "acme") == "feedback__acme"
    assert table.ensemble("feedback", "globex") == "feedback"
    assert table.ensemble("feedback", "") == "feedback"
    (tmp_path / TENANTS_FILE).write_text(json.dumps({}))
    assert table.ensemble("feedback", "acme") == "feedback"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return copy_repository(tmp_path_factory)


@pytest.fixture(scope="module")
def server(repo, tmp_path_factory):
    with run_server(repo, tmp_path_factory.mktemp("tenants") / "server.log") as running:
        yield running


@pytest.fixture(scope="module")
def tenants(server, repo, tmp_path_factory):
    """acme and globex get their own transformer, deployed while the server runs; returns what each answers."""
    expected = {"default": answers(repo / "transformer", "1")}
    for tenant, shift in SHIFTS.items():
        source = candidates.shifted(repo, "transformer", tmp_path_factory.mktemp(tenant), shift)
        assert (
            deploy(repo, "transformer", source, server=server.http_url, tenant=tenant, admin_key=server.admin_key) == 1
        )
        expected[tenant] = answers(source, "1")
    assert json.loads((repo / TENANTS_FILE).read_text()) == {"acme": ["transformer"], "globex": ["transformer"]}
    with httpclient.InferenceServerClient(server.http_url) as client:
        for tenant in SHIFTS:
            for model in (f"transformer__{tenant}", f"feedback__{tenant}", f"feedback_text__{tenant}"):
                assert client.is_model_ready(model), model
    for a, b in (("default", "acme"), ("default", "globex"), ("acme", "globex")):
        assert np.abs(expected[a] - expected[b]).max() > 1e-3, f"{a} and {b} must be told apart"
    return expected


def routed(server, tenant: str | None, ids=None, mask=None) -> np.ndarray:
    if ids is None:
        ids, mask, _ = held_out(REPOSITORY)
        ids, mask = ids[:LOAD_ROWS], mask[:LOAD_ROWS]
    arrays = {"INPUT_IDS": ids, "ATTENTION_MASK": mask}
    if tenant is not None:
        arrays["TENANT"] = np.array([[tenant.encode()]] * len(ids), dtype=object)
    inputs = []
    for name, array in arrays.items():
        inputs.append(grpcclient.InferInput(name, list(array.shape), "BYTES" if array.dtype == object else "INT64"))
        inputs[-1].set_data_from_numpy(array)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        return client.infer("feedback_routed", inputs).as_numpy("MEMBER_PROBS")
    finally:
        client.close()


def test_each_tenant_gets_its_own_model_concurrently(server, tenants):
    """acme and globex their own transformer, initech (no custom model) and untagged requests the default one."""
    cases = {"acme": "acme", "globex": "globex", "initech": "default", None: "default"}
    wrong, errors = [], []

    def client(tenant, model):
        try:
            for _ in range(REQUESTS):
                probs = routed(server, tenant)
                if not np.allclose(probs[:, TRANSFORMER_COLUMN], tenants[model], atol=1e-5):
                    wrong.append((tenant, model))
        except Exception as error:  # noqa: BLE001 - raised in the test's thread below, not lost as a warning
            errors.append((tenant, error))

    threads = [threading.Thread(target=client, args=case) for case in cases.items() for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, f"requests failed: {errors[:5]}"
    assert not wrong, f"answered by another model: {wrong[:5]}"
    with httpclient.InferenceServerClient(server.http_url) as client:
        for model in ("transformer__acme", "transformer__globex"):  # Triton's own per-model counts show who served
            (stats,) = client.get_inference_statistics(model)["model_stats"]
            assert stats["inference_count"] >= 2 * REQUESTS * LOAD_ROWS, stats


def test_probe_covers_the_router_and_every_tenant(server, repo, tenants):
    checks = {check.model: check for check in probe.probe(f"http://{server.http_url}", repository=repo)}
    assert {"feedback_routed", "feedback_routed (tenant acme)", "feedback_routed (tenant globex)"} <= set(checks)
    assert all(check.ok for check in checks.values()), checks


def test_malformed_tenant_id_gets_a_clear_error(server, tenants):
    with pytest.raises(InferenceServerException, match="TENANT '../transformer': expected 1-32") as error:
        routed(server, "../transformer")
    assert "INVALID_ARG" in str(error.value.status())
    with pytest.raises(InferenceServerException, match="one tenant per request"):
        ids, mask, _ = held_out(REPOSITORY)
        arrays = {"TENANT": np.array([[b"acme"], [b"globex"]], dtype=object)}
        inputs = [grpcclient.InferInput(n, [2, ids.shape[1]], "INT64") for n in ("INPUT_IDS", "ATTENTION_MASK")]
        inputs[0].set_data_from_numpy(ids[:2])
        inputs[1].set_data_from_numpy(mask[:2])
        inputs.append(grpcclient.InferInput("TENANT", [2, 1], "BYTES"))
        inputs[-1].set_data_from_numpy(arrays["TENANT"])
        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            client.infer("feedback_routed", inputs)
    assert np.allclose(routed(server, "acme")[:, TRANSFORMER_COLUMN], tenants["acme"], atol=1e-5)


def test_mapping_is_reloaded_without_a_restart(server, repo, tenants):
    mapping_file: Path = repo / TENANTS_FILE
    original = mapping_file.read_text()
    try:
        mapping_file.write_text(json.dumps({"globex": ["transformer"]}))
        assert np.allclose(routed(server, "acme")[:, TRANSFORMER_COLUMN], tenants["default"], atol=1e-5)
        assert np.allclose(routed(server, "globex")[:, TRANSFORMER_COLUMN], tenants["globex"], atol=1e-5)
    finally:
        mapping_file.write_text(original)
    assert np.allclose(routed(server, "acme")[:, TRANSFORMER_COLUMN], tenants["acme"], atol=1e-5)


def test_tenant_ids_that_could_escape_are_refused_by_deploy(repo, tmp_path):
    with pytest.raises(Rejected, match="expected 1-32 lowercase"):
        deploy(repo, "transformer", candidates.shifted(repo, "transformer", tmp_path), tenant="../../etc")
    assert not [p for p in repo.iterdir() if re.search(r"etc|\.\.", p.name)]


def test_a_tenant_deploy_the_server_does_not_take_leaves_nothing_behind(tmp_path_factory, tmp_path):
    """The candidate passes every check, but the server it must go live on does not answer: the version is moved
    out again, and so are the tenant's generated ensembles, which would otherwise point at a missing model."""
    repo = copy_repository(tmp_path_factory)
    before = sorted(path.relative_to(repo) for path in repo.rglob("*") if "__pycache__" not in path.parts)
    (closed,) = free_ports(1)  # nothing listens there
    source = candidates.shifted(repo, "transformer", tmp_path)
    with pytest.raises(Rejected, match="the server did not serve version 1"):
        deploy(repo, "transformer", source, server=f"127.0.0.1:{closed}", tenant="initech")
    after = sorted(path.relative_to(repo) for path in repo.rglob("*") if "__pycache__" not in path.parts)
    assert after == before, set(after) ^ set(before)


def test_a_tenant_model_that_answers_wrongly_fails_the_probe(server, repo, tenants, tmp_path):
    """umbrella's deploy records what its own models answer; a version that answers otherwise (copied in past the
    gates, as a bad hand copy would be) must fail umbrella's canary, and only umbrella's."""
    source = candidates.shifted(repo, "transformer", tmp_path / "good")
    deploy(repo, "transformer", source, server=server.http_url, tenant="umbrella", admin_key=server.admin_key)
    canary = json.loads((repo / "canary__umbrella.json").read_text())
    assert len(canary["labels"]) == 12 and len(set(canary["labels"])) == 6  # two rows per class
    url = f"http://{server.http_url}"
    assert all(check.ok for check in probe.probe(url, repository=repo))
    wrong = candidates.shifted(repo, "transformer", tmp_path / "wrong", shift=30.0)  # class 0, whatever the text
    shutil.copytree(wrong / "1", repo / "transformer__umbrella" / "2")
    deadline = time.monotonic() + 60
    checks = probe.probe(url, repository=repo)
    while all(check.ok for check in checks):  # until poll mode loads version 2
        assert time.monotonic() < deadline, "the probe still passes 60 s after the wrong version was copied in"
        time.sleep(0.5)
        checks = probe.probe(url, repository=repo)
    failed = {check.model: check.error for check in checks if not check.ok}
    assert list(failed) == ["feedback_routed (tenant umbrella)"], failed
    assert "the canary comments' labels are" in failed["feedback_routed (tenant umbrella)"]
