"""The Python-backend logic and the exporter's building blocks, without a server."""

import os

import numpy as np
import pytest
import torch

from conventions import CANARY_FILE, TENANTS_FILE
from export import corpus
from export.configs import MemberSpec, member_config
from export.members import DEFAULT_PROFILE, PROFILES, SMALL_TRANSFORMER, TextCNN, TransformerClassifier
from perf.app_checks import check_token_inputs
from python_backend.batching import run_batched
from python_backend.errors import BadRequest
from python_backend.fuse import labels, make_combiner, stack_members, weighted_mean
from python_backend.inprocess import RAGGED_INPUTS
from python_backend.layout import parse_config
from python_backend.text import decode_rows
from release.gates import fits

pytestmark = pytest.mark.unit


def test_corpus_is_deterministic_and_covers_every_topic():
    first, second = corpus.generate(500), corpus.generate(500)
    assert first == second
    assert {c.topic for c in first} == set(corpus.TOPICS)
    assert {c.sentiment for c in first} == {"positive", "negative", "mixed"}


def test_run_batched_computes_each_shape_group_once_and_isolates_bad_requests():
    calls = []

    def parse(x):
        if x.min() < 0:
            raise BadRequest("negative")
        return (x,)

    def compute(x):
        calls.append(x.shape)
        return (x * 2,)

    requests = [(np.ones((2, 3)),), (-np.ones((1, 3)),), (np.full((3, 3), 5.0),), (np.ones((1, 4)),)]
    results = run_batched(requests, parse, compute)
    assert sorted(calls) == [(1, 4), (5, 3)]  # two valid [*, 3] requests ran as one batch of 5
    assert isinstance(results[1], BadRequest)
    np.testing.assert_array_equal(results[0][0], np.full((2, 3), 2.0))
    np.testing.assert_array_equal(results[2][0], np.full((3, 3), 10.0))
    np.testing.assert_array_equal(results[3][0], np.full((1, 4), 2.0))


def test_run_batched_reports_a_compute_failure_to_its_batch_only():
    def compute(x):
        if x.shape[1] == 4:
            raise RuntimeError("model failed")
        return (x,)

    results = run_batched([(np.ones((1, 3)),), (np.ones((1, 4)),)], lambda x: (x,), compute)
    assert isinstance(results[1], RuntimeError) and not isinstance(results[0], Exception)


@pytest.mark.parametrize(
    ("ids", "mask", "message"),
    [
        (np.ones((1, 4), np.int32), np.ones((1, 4), np.int64), "expected int64"),
        (np.ones((4,), np.int64), np.ones((4,), np.int64), "expected rank 2"),
        (np.ones((0, 4), np.int64), np.ones((0, 4), np.int64), "empty batch"),
        (np.ones((1, 4), np.int64), np.ones((1, 5), np.int64), "same shape"),
        (np.ones((1, 9), np.int64), np.ones((1, 9), np.int64), "outside the supported range 1..8"),
        (np.full((1, 4), 10), np.ones((1, 4), np.int64), "must be in [0, 10)"),
        (np.full((1, 4), -1), np.ones((1, 4), np.int64), "must be in [0, 10)"),
        (np.ones((1, 4), np.int64), np.full((1, 4), 2), "0 or 1"),
    ],
)
def test_token_input_checks(ids, mask, message):
    with pytest.raises(BadRequest, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        check_token_inputs(ids, mask, vocab_size=10, max_seq_len=8)


def test_decode_rows_limits():
    ok = decode_rows(np.array([["héllo".encode()], [b""]], dtype=object), max_bytes=10)
    assert ok.tolist() == ["héllo", ""]
    with pytest.raises(BadRequest, match="not valid UTF-8"):
        decode_rows(np.array([[b"\xff"]], dtype=object), max_bytes=10)
    with pytest.raises(BadRequest, match="11 bytes, the limit is 10"):
        decode_rows(np.array([[b"a" * 11]], dtype=object), max_bytes=10)
    with pytest.raises(BadRequest, match="shape"):
        decode_rows(np.array([b"a"], dtype=object), max_bytes=10)


def test_fuse_weighted_mean_and_labels():
    a = np.array([[0.9, 0.1], [0.2, 0.8]], np.float32)
    b = np.array([[0.5, 0.5], [0.6, 0.4]], np.float32)
    stacked = stack_members([a, b], num_classes=2)
    np.testing.assert_allclose(weighted_mean(stacked, np.array([1.0, 1.0])), (a + b) / 2, atol=1e-7)
    combine = make_combiner(["a", "b"], {"weights": "a=3"}, version_dir="")
    np.testing.assert_allclose(combine(stacked), 0.75 * a + 0.25 * b, atol=1e-7)
    assert labels(combine(stacked), ["no", "yes"]).tolist() == [[b"no"], [b"yes"]]


@pytest.mark.parametrize(
    "bad",
    [
        [np.ones((2, 3), np.float32)],  # wrong class count
        [np.ones((2, 2), np.float64)],  # wrong dtype
        [np.full((2, 2), np.nan, np.float32)],
        [np.full((2, 2), 0.5, np.float32), np.full((3, 2), 0.5, np.float32)],  # batch mismatch
    ],
)
def test_fuse_rejects_bad_member_outputs(bad):
    with pytest.raises(BadRequest):
        stack_members(bad, num_classes=2)


def test_fuse_rejects_bad_weights():
    with pytest.raises(ValueError, match="unknown members"):
        make_combiner(["a"], {"weights": "b=1"}, "")
    with pytest.raises(ValueError, match="combiner must be"):
        make_combiner(["a"], {"combiner": "vote"}, "")


@pytest.mark.parametrize("member", ["transformer", "textcnn"])
def test_members_ignore_padding_exactly(member):
    torch.manual_seed(0)
    table = torch.randn(50, 16)
    model = (
        TransformerClassifier(table, 6, SMALL_TRANSFORMER) if member == "transformer" else TextCNN(table, 6)
    ).eval()
    ids = torch.randint(1, 50, (3, 10))
    mask = (torch.arange(10) < torch.tensor([[10], [4], [1]])).long()
    padded_ids = torch.cat([ids * mask, torch.zeros(3, 6, dtype=torch.long)], 1)
    padded_mask = torch.cat([mask, torch.zeros(3, 6, dtype=torch.long)], 1)
    with torch.inference_mode():
        torch.testing.assert_close(model(ids * mask, mask), model(padded_ids, padded_mask), atol=1e-6, rtol=0)


def test_member_config_batches_ragged_rows_and_warms_up_on_real_shapes():
    spec = MemberSpec("m", "onnxruntime_onnx", RAGGED_INPUTS, ("PROBS", "INPUT_ERRORS"), ("a", "b"), 100, 512)
    config = parse_config(member_config(spec))
    assert config.max_batch_size > 0 and list(config.dynamic_batching.preferred_batch_size)
    assert all(tensor.allow_ragged_batch for tensor in config.input)  # requests of any length batch together
    assert [(b.target_name[0], b.source_input[0]) for b in config.batch_input] == [
        ("INPUT_IDS_LENGTHS", "INPUT_IDS"),
        ("ATTENTION_MASK_LENGTHS", "ATTENTION_MASK"),
    ]
    assert [(w.batch_size, w.inputs["INPUT_IDS"].dims) for w in config.model_warmup] == [(16, [24]), (4, [256])]
    assert config.version_policy.HasField("latest")


def test_member_config_serves_the_shapes_instances_and_threads():
    shape = PROFILES[DEFAULT_PROFILE]
    spec = MemberSpec(
        "m", "pytorch_libtorch", ("A", "B", "C", "D"), ("P", "E"), ("a",), 100, 512, shape.instances, shape.threads
    )
    config = parse_config(member_config(spec))
    assert [group.count for group in config.instance_group] == [shape.instances]
    assert config.parameters["INTRA_OP_THREAD_COUNT"].string_value == str(shape.threads)
    assert "INTER_OP_THREAD_COUNT" not in config.parameters  # a reload with it aborts tritonserver 2.51


def test_bench_gpu_variant_moves_only_the_members_to_the_gpu(tmp_path):
    from perf.repositories import variant
    from python_backend.layout import read_config
    from server import ROOT

    copy = variant(ROOT / "model_repository", tmp_path / "gpu", gpu=True)
    kinds = {path.parent.name: read_config(path.parent) for path in copy.glob("*/config.pbtxt")}
    gpu = {name for name, config in kinds.items() if any(g.kind == g.KIND_GPU for g in config.instance_group)}
    assert gpu == {"transformer", "textcnn"}
    accelerators = kinds["transformer"].optimization.execution_accelerators.gpu_execution_accelerator
    assert [accelerator.name for accelerator in accelerators] == ["cuda"]


def test_stacking_combiner_reads_what_export_fitted(tmp_path):
    from export.train import fit_stacking

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, 400)
    good = np.eye(3, dtype=np.float32)[truth] * 0.8 + 0.2 / 3  # a reliable member
    noise = rng.dirichlet(np.ones(3), 400).astype(np.float32)  # a useless one
    stacked = stack_members([noise, good], num_classes=3)
    coef, bias = fit_stacking(stacked, truth)
    np.savez(tmp_path / "stacking.npz", coef=coef, bias=bias, members=np.array(["noise", "good"]))
    combine = make_combiner(["noise", "good"], {"combiner": "stacking"}, str(tmp_path))
    probs = combine(stacked)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert (probs.argmax(1) == truth).mean() == 1.0  # it learned to follow the reliable member
    with pytest.raises(ValueError, match="fitted on"):
        make_combiner(["good", "noise"], {"combiner": "stacking"}, str(tmp_path))


def test_probe_checks_answers_and_covers_every_tenant(tmp_path):
    import json

    from server import probe

    canary = {
        "texts": ["a", "b"],
        "input_ids": [[5, 6], [7, 8]],
        "attention_mask": [[1, 1], [1, 0]],
        "labels": ["x", "y"],
    }
    (tmp_path / CANARY_FILE).write_text(json.dumps(canary))
    assert [c.name for c in probe.canaries(tmp_path)] == ["feedback_text", "feedback", "feedback_routed"]
    (tmp_path / TENANTS_FILE).write_text(json.dumps({"acme": ["transformer"]}))
    with pytest.raises(FileNotFoundError, match="canary__acme.json"):  # a tenant without its own canary
        probe.canaries(tmp_path)
    (tmp_path / "canary__acme.json").write_text(json.dumps(canary | {"labels": ["y", "x"]}))
    checks = probe.canaries(tmp_path)
    assert checks[-1].name == "feedback_routed (tenant acme)" and checks[-1].labels == ["y", "x"]
    assert checks[-1].inputs[-1] == {"name": "TENANT", "datatype": "BYTES", "shape": [2, 1], "data": ["acme"] * 2}
    assert checks[1].inputs[0] == {"name": "INPUT_IDS", "datatype": "INT64", "shape": [2, 2], "data": [5, 6, 7, 8]}

    def outputs(probs, labels):
        return {"PROBS": {"shape": [2, 2], "data": probs}, "LABEL": {"shape": [2, 1], "data": labels}}

    assert probe.wrong_answer(outputs([0.9, 0.1, 0.2, 0.8], ["x", "y"]), ["x", "y"]) == ""
    assert "labels are ['x', 'y']" in probe.wrong_answer(outputs([0.9, 0.1, 0.2, 0.8], ["y", "y"]), ["x", "y"])
    assert "row 1 sums to 0.5000" in probe.wrong_answer(outputs([0.9, 0.1, 0.2, 0.3], ["x", "y"]), ["x", "y"])

    # Tenant heads: the newest head's canary, sent to feedback_tenant and checked on its TENANT_* outputs.
    stale = {"file": "transformer/1/model.onnx", "size": 1, "mtime_ns": 1}  # not the live one (none here)
    for age, tenant in enumerate(("older", "newer", "stale")):
        path = tmp_path / f"canary__head__{tenant}.json"
        trained_on = stale if tenant == "stale" else probe.transformer_stamp(tmp_path)
        path.write_text(json.dumps({"texts": ["a", "b"], "labels": ["p", "q"], "transformer": trained_on}))
        os.utime(path, (1_000_000 + age, 1_000_000 + age))
    head = probe.canaries(tmp_path)[-1]
    assert (head.name, head.model) == ("feedback_tenant (tenant newer)", "feedback_tenant")
    assert head.outputs == ("TENANT_PROBS", "TENANT_LABEL")
    assert head.inputs[1] == {"name": "TENANT", "datatype": "BYTES", "shape": [2, 1], "data": ["newer"] * 2}
    named = {"TENANT_PROBS": {"shape": [2, 2], "data": [0.9, 0.1, 0.2, 0.8]}}
    named["TENANT_LABEL"] = {"shape": [2, 1], "data": ["q", "q"]}
    assert "TENANT_LABEL ['q', 'q']" in probe.wrong_answer(named, head.labels, head.outputs)


def test_canary_rows_are_each_class_at_its_most_confident_and_its_narrowest_safe_margin():
    from release.canary import MIN_MARGIN, chosen_rows

    probs = np.array(
        [
            [0.90, 0.10, 0.00],  # class 0, the most confident
            [0.55, 0.45, 0.00],  # class 0 by 0.10: the borderline row
            [0.505, 0.495, 0.00],  # class 0 by 0.01: under MIN_MARGIN, too close to trust
            [0.30, 0.70, 0.00],  # class 1, labelled 1: both its most confident and its narrowest
            [0.80, 0.20, 0.00],  # labelled 1 but answered 0: never a canary
            [0.10, 0.10, 0.80],  # labelled 2 ...
            [0.00, 0.35, 0.65],  # ... its borderline row
        ]
    )
    labels = np.array([0, 0, 0, 1, 1, 2, 2])
    assert MIN_MARGIN > 0.01
    assert chosen_rows(probs, labels) == [0, 3, 5, 1, 6]


def test_bench_report_states_its_run(tmp_path):
    import re

    from perf import runs

    assert runs.run_line(tmp_path) == "Machine, date and commit: not recorded with this run."
    runs.record_run(tmp_path, {"mode": "quick"})
    line = runs.run_line(tmp_path)
    assert re.fullmatch(r"Machine: \d+ cores .*; run started \d{4}-\d\d-\d\dT\d\d:\d\d at commit \w+.*\.", line), line


def test_bench_targets_judge_each_repetitions_ratio():
    from perf import verdicts

    def row(system, rep, throughput, p99):
        return {"profile": "accurate", "system": system, "concurrency": 16.0, "rep": rep, "throughput": throughput,
                "p99_us": p99}  # fmt: skip

    results = []
    for rep, triton in ((0.0, 300.0), (1.0, 250.0), (2.0, 310.0)):
        results += [row("triton_text_http", rep, triton, 90e3), row("v0_text", rep, 200.0, 120e3)]
        results += [row("pipeline_text", rep, 280.0, 80e3)]
    mix = {"tokens_mean": 27.0, "old_padding_share": 0.6}
    accuracy = [
        {"profile": "accurate", "file": "handwritten_eval.csv", "rows": 60, "ensemble": 0.9},
        {"profile": "accurate", "file": "handwritten_holdout.csv", "rows": 120, "ensemble": 0.875},
        {"profile": "accurate", "file": "long_comments.csv", "rows": 12, "ensemble": 0.0},
    ]
    table = {
        line.split(" | ")[0].strip("| "): line
        for line in verdicts.targets("accurate", results, {"rows_per_s": 320.0}, mix, accuracy)
    }
    assert "| 1.50 (1.25–1.55) | ≥ 1.0 | met |" in table["throughput / v0_text"]
    assert "| 1.07 (0.89–1.11) | ≥ 1.0 | within noise |" in table["throughput / pipeline_text"]
    assert "| 1.12 (1.12–1.12) | ≤ 1.0 | **missed** |" in table["p99 / pipeline_text p99"]
    assert "| 0.94 (0.78–0.97) | ≥ 0.95 | within noise |" in table["throughput / in-process limit"]
    # 54 + 105 of 180 right: 0.883, its 95% interval 0.83-0.92 straddles 0.85
    assert "0.883 (95% 0.83–0.92) | ≥ 0.85 | within noise" in table["accuracy on 180 hand-written comments"]
    assert (
        "transformer 0%, textcnn 10% (padded to 64 before: 60%) | ≤ 25% | met"
        in table["padding in the token positions the members compute"]
    )


def test_bulk_json_values_that_are_not_text_are_error_records_in_place(tmp_path):
    """null, a number, an object, a list, a boolean or a lone surrogate is an error record of its own row, not a
    comment reading "None" (or a crash that ends the run); the good rows around them are read as they are."""
    from client.bulk import read_rows

    values = ['"first"', "null", "3", '{"a": 1}', "[1]", "true", '"\\ud800 half a pair"', '"last"']
    path = tmp_path / "comments.jsonl"
    path.write_text("".join(f'{{"text": {value}}}\n' for value in values))
    rows = list(read_rows(path, "text"))
    assert [row.number for row in rows] == list(range(len(values)))
    assert [(row.text, row.error) for row in (rows[0], rows[-1])] == [("first", ""), ("last", "")]
    errors = [row.error for row in rows[1:-1]]
    assert errors[:5] == [
        f"'text' is {kind}, not text" for kind in ("null", "a number", "an object", "a list", "a boolean")
    ]
    assert errors[5].startswith("not valid text (a lone surrogate U+D800")


def test_pretrained_files_that_differ_from_the_pinned_hashes_stop_export(tmp_path):
    """export/minilm.py reads only files with the pinned sha256: one changed byte in tokenizer.json, or a missing
    weight file, stops it with one line that names the file."""
    from export import minilm

    real = minilm.files()  # the real unpacked checkpoint passes
    for name in minilm.PINNED:
        (tmp_path / name).symlink_to(real / name)
    (tmp_path / "tokenizer.json").unlink()
    (tmp_path / "tokenizer.json").write_bytes((real / "tokenizer.json").read_bytes().replace(b"[CLS]", b"[CLX]", 1))
    with pytest.raises(SystemExit, match=r"tokenizer\.json: sha256 \w+\.\.\. is not the pinned"):
        minilm.verified(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(SystemExit, match=r"model\.safetensors: sha256 missing"):
        minilm.verified(tmp_path)  # a failure is not cached: the check runs again


@pytest.mark.parametrize(
    "have, wanted, is_input, ok",
    [
        ((1, (384,)), (1, (384,)), False, True),
        ((1, (32,)), (1, (384,)), False, False),  # an output the ensembles read as 384 wide
        ((1, (32,)), (1, (-1,)), False, True),  # one they read at any width
        ((1, (-1,)), (1, (384,)), True, True),  # an input that takes any width is handed 384
        ((1, (-1,)), (1, (384,)), False, False),  # an output of any width where 384 is expected
        ((2, (384,)), (1, (384,)), True, False),  # another dtype
    ],
)
def test_the_interface_gate_lets_an_input_take_any_size(have, wanted, is_input, ok):
    assert fits(have, wanted, is_input) is ok
