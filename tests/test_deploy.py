"""release/deploy.py against real tritonservers in both model-control modes: new versions and rollbacks go live under
steady load with no failed request, broken candidates are refused by deploy and, dropped in by hand, leave the old
version serving. The load lasts a few seconds here; perf/model_swap.py runs the same swap under 30 s+ of load."""

import logging
import re
import shutil
import time

import numpy as np
import pytest
import tritonclient.http as httpclient

from harness import candidates
from harness.steady_load import (
    LOAD_ROWS,
    TRANSFORMER_COLUMN,
    SteadyLoad,
    answers,
    served_by,
    served_versions,
    wait_until,
)
from python_backend.layout import latest_version
from release.deploy import deploy, retired, rollback
from release.gates import MIN_ACCURACY, Rejected, held_out, served_class_names
from tests.conftest import POLL_SECS, REPOSITORY, run_server

ENSEMBLES = ("feedback", "feedback_text")


def copy_repository(tmp_path_factory):
    """Tests deploy into a copy: the committed repository stays as exported. The copy's parent holds nothing else,
    so staging folders, locks and the retired archive beside it can be checked."""
    repo = tmp_path_factory.mktemp("deploy") / "model_repository"
    shutil.copytree(REPOSITORY, repo, ignore=shutil.ignore_patterns("__pycache__"))  # links become copies
    return repo


def loads_settled(log: str, model: str) -> bool:
    """Every `loading: <model>:N` in this server log has ended, loaded or failed."""
    started = log.count(f"loading: {model}:")
    ended = len(re.findall(rf"""(successfully loaded|failed to load) '{model}'"$""", log, re.M))
    return started == ended


def assert_ensembles_ready(client) -> None:
    """Triton server #4828: reloading a member once unloaded the ensembles using it."""
    for ensemble in ENSEMBLES:
        assert client.is_model_ready(ensemble), f"{ensemble} is not ready"


def swap_under_load(server, action, expect: str, before: dict[str, np.ndarray], after_version: str):
    """Run `action` while 3 clients send requests; every response must come from a known version, none may fail,
    and every request sent after the server reports `after_version` ready must be answered by `expect`."""
    ids, mask, _ = held_out(REPOSITORY)
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        with SteadyLoad(server.grpc_url, ids[:LOAD_ROWS], mask[:LOAD_ROWS], threads=3) as load:
            time.sleep(1)
            action()
            switched = wait_until(
                lambda: served_versions(client, "transformer", server.admin_headers("http")) == [after_version],
                "the swap",
            )
            time.sleep(1)
        assert_ensembles_ready(client)
    finally:
        client.close()
    assert not load.failures(), f"{len(load.failures())} failed requests, first: {load.failures()[0].error}"
    sources = [served_by(r, TRANSFORMER_COLUMN, before) for r in load.records]
    assert None not in sources, "a response matched no version"
    assert set(sources) == set(before), f"both versions must have answered, got {set(sources)}"
    late = {source for r, source in zip(load.records, sources, strict=True) if r.start > switched}
    assert late == {expect}, f"requests sent after the swap were answered by {late}"
    return load


class TestPollMode:
    @pytest.fixture(scope="class")
    @classmethod
    def repo(cls, tmp_path_factory):
        return copy_repository(tmp_path_factory)

    @pytest.fixture(scope="class")
    @classmethod
    def server(cls, repo, tmp_path_factory):
        with run_server(repo, tmp_path_factory.mktemp("poll") / "server.log") as running:
            yield running

    def test_deploy_and_rollback_under_load_fail_no_request(self, server, repo, tmp_path):
        model_dir = repo / "transformer"
        old = latest_version(model_dir).name
        source = candidates.shifted(repo, "transformer", tmp_path)
        new = str(int(old) + 1)
        versions = {"old": answers(model_dir, old), "new": answers(source, "1")}
        assert np.abs(versions["old"] - versions["new"]).max() > 1e-3, "the new version must be told apart"

        swap_under_load(server, lambda: deploy(repo, "transformer", source), "new", versions, new)
        with httpclient.InferenceServerClient(server.http_url) as client:
            stats = client.get_inference_statistics("transformer")["model_stats"]
        assert [s["inference_count"] > 0 for s in stats if s["version"] == new] == [True], stats

        swap_under_load(server, lambda: rollback(repo, "transformer"), "old", versions, old)
        assert latest_version(model_dir).name == old
        assert [p.name.split("-")[0] for p in (retired(repo) / "transformer").iterdir()] == [new]

    @pytest.mark.parametrize(
        "case",
        [
            "corrupt ONNX",
            "wrong output shape",
            "wrong class count",
            "other label order",
            "Python step answering wrongly",
            "no warm-up",
            "Python model raising at load",
        ],
    )
    def test_broken_candidate_is_refused_and_leaves_nothing(self, repo, tmp_path, case):
        build = {
            "corrupt ONNX": lambda: candidates.corrupt_onnx(repo, tmp_path),
            "wrong output shape": lambda: candidates.five_classes(repo, tmp_path, config_says=6),
            "wrong class count": lambda: candidates.five_classes(repo, tmp_path, config_says=5),
            "other label order": lambda: candidates.relabelled(repo, tmp_path),
            "Python step answering wrongly": lambda: candidates.fuse_with(
                repo, tmp_path, "class_names", ",".join(reversed(served_class_names(repo)))
            ),
            "no warm-up": lambda: candidates.without_warmup(repo, tmp_path),
            "Python model raising at load": lambda: candidates.fuse_that_raises(repo, tmp_path),
        }
        reason = {
            "corrupt ONNX": "artifact does not load: .*Protobuf parsing failed",
            "wrong output shape": r"artifact returns shape \[(\d+), 5\], its config says \[\1, 6\]",
            "wrong class count": r"output 'PROBS' is TYPE_FP32 \[5\], the ensembles expect TYPE_FP32 \[6\]",
            "other label order": r"label set \[.*\] is not the served \[.*\]: same names, other order",
            "Python step answering wrongly": rf"held-out accuracy 0\.\d+ is below the threshold {MIN_ACCURACY}",
            "no warm-up": "config has no model_warmup",
            "Python model raising at load": "does not load in Triton: .*this fuse candidate refuses to start",
        }
        source = build[case]()
        model = source.name
        before = sorted(p.relative_to(repo.parent) for p in repo.parent.rglob("*"))
        with pytest.raises(Rejected, match=reason[case]):
            deploy(repo, model, source)
        after = sorted(p.relative_to(repo.parent) for p in repo.parent.rglob("*"))
        assert after == before, "a refused candidate must leave no file behind, in the repository or beside it"

    def test_a_python_step_is_judged_by_what_the_ensemble_serves(self, repo, tmp_path, caplog):
        """Another combiner for fuse: served in a throwaway copy of the repository, through feedback_text."""
        source = candidates.fuse_with(repo, tmp_path, "combiner", "stacking")
        live = latest_version(repo / "fuse").name
        caplog.set_level(logging.INFO, logger="release.deploy")
        version = deploy(repo, "fuse", source)
        said = caplog.text
        assert version == int(live) + 1
        assert re.search(r"serves in Triton, batched = row by row within \S+, held-out accuracy 0\.9\d+ through "
                         rf"feedback_text \(live version {live}: 0\.9\d+\)", said), said  # fmt: skip
        rollback(repo, "fuse")  # the later tests expect the exported fuse

    @pytest.mark.parametrize("case", ["corrupt ONNX", "Python model raising at load"])
    def test_broken_version_dropped_by_hand_leaves_the_old_one_serving(self, server, repo, tmp_path, case):
        source = (
            candidates.corrupt_onnx(repo, tmp_path)
            if case == "corrupt ONNX"
            else candidates.fuse_that_raises(repo, tmp_path)
        )
        model_dir = repo / source.name
        old = latest_version(model_dir).name
        dropped = model_dir / str(int(old) + 1)
        log_before = len(server.log.read_text(errors="replace"))
        shutil.copytree(source / "1", dropped)
        try:
            reason = "Protobuf parsing failed" if case == "corrupt ONNX" else "this fuse candidate refuses to start"
            wait_until(lambda: reason in server.log.read_text(errors="replace")[log_before:], "the failure in the log")
            with httpclient.InferenceServerClient(server.http_url) as client:
                assert served_versions(client, source.name, server.admin_headers("http")) == [old]
                assert_ensembles_ready(client)
            ids, mask, _ = held_out(REPOSITORY)
            with SteadyLoad(server.grpc_url, ids[:LOAD_ROWS], mask[:LOAD_ROWS], threads=1) as load:
                time.sleep(0.5)
            assert load.records and not load.failures()
        finally:
            shutil.rmtree(dropped)
            # Poll mode retries a failed version while it exists (the stub's __pycache__ in it counts as a change):
            # let the poll after the removal finish loading, or the next test or the teardown's shutdown meets a
            # half-loaded model (a shutdown then hung for its 30 s and left the stubs' regions behind).
            time.sleep(2 * POLL_SECS)
            wait_until(
                lambda: loads_settled(server.log.read_text(errors="replace")[log_before:], model_dir.name), "poll"
            )
        log = server.log.read_text(errors="replace")[log_before:]
        assert re.search(rf"failed to load '{source.name}' version {dropped.name}", log), log[-2000:]


class TestExplicitMode:
    @pytest.fixture(scope="class")
    @classmethod
    def repo(cls, tmp_path_factory):
        return copy_repository(tmp_path_factory)

    @pytest.fixture(scope="class")
    @classmethod
    def server(cls, repo, tmp_path_factory):
        with run_server(repo, tmp_path_factory.mktemp("explicit") / "server.log", model_control="explicit") as running:
            yield running

    def test_deploy_and_rollback_through_the_load_api_fail_no_request(self, server, repo, tmp_path):
        model_dir = repo / "transformer"
        old = latest_version(model_dir).name
        source = candidates.shifted(repo, "transformer", tmp_path)
        new = str(int(old) + 1)
        versions = {"old": answers(model_dir, old), "new": answers(source, "1")}

        with httpclient.InferenceServerClient(server.http_url) as client:
            assert served_versions(client, "transformer", server.admin_headers("http")) == [old]
            # Explicit mode ignores the repository until told: a version that is only dropped in is not served.
            swap_under_load(
                server,
                lambda: deploy(repo, "transformer", source, server=server.http_url, admin_key=server.admin_key),
                "new",
                versions,
                new,
            )
            swap_under_load(
                server,
                lambda: rollback(repo, "transformer", server=server.http_url, admin_key=server.admin_key),
                "old",
                versions,
                old,
            )
            assert_ensembles_ready(client)

    def test_broken_version_dropped_by_hand_is_refused_by_the_load_api(self, server, repo, tmp_path):
        source = candidates.corrupt_onnx(repo, tmp_path)
        model_dir = repo / "transformer"
        old = latest_version(model_dir).name
        dropped = model_dir / str(int(old) + 1)
        shutil.copytree(source / "1", dropped)
        try:
            with httpclient.InferenceServerClient(server.http_url) as client:
                with pytest.raises(Exception, match="Protobuf parsing failed"):
                    client.load_model("transformer", headers=server.admin_headers("http"))
                assert served_versions(client, "transformer", server.admin_headers("http")) == [old]
                assert_ensembles_ready(client)
        finally:
            shutil.rmtree(dropped)
        ids, mask, _ = held_out(REPOSITORY)
        with SteadyLoad(server.grpc_url, ids[:LOAD_ROWS], mask[:LOAD_ROWS], threads=1) as load:
            time.sleep(0.5)
        assert load.records and not load.failures()
        expected = answers(model_dir, old)
        assert all(served_by(r, TRANSFORMER_COLUMN, {"old": expected}) for r in load.records)
