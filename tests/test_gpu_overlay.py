"""deploy/gpu_overlay.py: the GPU variant of the repository is generated, valid, and serves the same answers.

No GPU here: the served check uses --instance-kind auto, which Triton resolves to CPU instances on this machine.
"""

import numpy as np
import onnxruntime as ort
import pytest
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2

from deploy.gpu_overlay import write_overlay
from export.configs import parse
from python_backend.devices import onnxruntime_providers
from tests.conftest import REPOSITORY, run_server
from tests.test_serving import TEXTS, assert_same, infer, text_tensor

GPU = model_config_pb2.ModelInstanceGroup.KIND_GPU


def config(repository, name) -> model_config_pb2.ModelConfig:
    return parse((repository / name / "config.pbtxt").read_text())


@pytest.fixture(scope="module")
def overlay(tmp_path_factory):
    target = tmp_path_factory.mktemp("overlay") / "gpu_repository"
    write_overlay(REPOSITORY, target, tensorrt=True)
    return target


def test_members_get_gpu_instances_and_accelerators(overlay):
    for name in ("transformer", "textcnn"):
        assert [group.kind for group in config(overlay, name).instance_group] == [GPU]
    transformer = config(overlay, "transformer")
    accelerators = transformer.optimization.execution_accelerators.gpu_execution_accelerator
    assert [a.name for a in accelerators] == ["tensorrt", "cuda"]
    source = config(REPOSITORY, "transformer")
    max_seq = source.parameters["max_seq_len"].string_value
    expected = ",".join(f"{t.name}:{source.max_batch_size}x{max_seq}" for t in source.input)
    assert accelerators[0].parameters["trt_profile_max_shapes"] == expected
    # Everything but the device settings is the source's config.
    for name in ("transformer", "textcnn"):
        gpu, cpu = config(overlay, name), config(REPOSITORY, name)
        for changed in (gpu, cpu):
            changed.ClearField("instance_group")
            changed.ClearField("optimization")
        assert gpu == cpu


def test_python_steps_and_ensembles_are_copied_unchanged(overlay):
    for name in ("tokenizer", "check_tokens", "fuse", "feedback", "feedback_text"):
        assert (overlay / name / "config.pbtxt").read_text() == (REPOSITORY / name / "config.pbtxt").read_text()
    for source in REPOSITORY.glob("*/1/model.py"):
        copy = overlay / source.relative_to(REPOSITORY)
        assert not copy.is_symlink() and copy.read_bytes() == source.read_bytes()  # mountable without python_backend/
    assert not list(overlay.rglob("__pycache__"))


def test_overlay_replaces_only_what_it_wrote(overlay, tmp_path):
    write_overlay(REPOSITORY, overlay, tensorrt=True)  # regenerating is fine
    (tmp_path / "mine").mkdir()
    with pytest.raises(FileExistsError, match="not written by this script"):
        write_overlay(REPOSITORY, tmp_path / "mine")


def test_onnxruntime_providers_follow_the_config_and_fall_back_to_cpu(overlay):
    raw = json_format.MessageToDict(config(overlay, "transformer"), preserving_proto_field_name=True)
    providers = onnxruntime_providers(raw, on_gpu=True, device_id=0)
    assert [p[0] if isinstance(p, tuple) else p for p in providers] == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert providers[0][1]["trt_fp16_enable"] is True
    assert onnxruntime_providers(raw, on_gpu=False, device_id=0) == ["CPUExecutionProvider"]
    # Where TensorRT or CUDA cannot load (here: no GPU), onnxruntime runs the model on CPU with the same answer.
    model = str(overlay / "transformer" / "1" / "model.onnx")
    feeds = {"INPUT_IDS": np.ones((2, 8), np.int64), "ATTENTION_MASK": np.ones((2, 8), np.int64)}
    session = ort.InferenceSession(model, providers=providers)
    on_cpu = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    fell_back = session.get_providers() == ["CPUExecutionProvider"]
    np.testing.assert_allclose(session.run(None, feeds)[0], on_cpu, atol=0 if fell_back else 1e-2)  # FP16 on GPU


@pytest.fixture(scope="module")
def auto_server(tmp_path_factory):
    target = tmp_path_factory.mktemp("overlay_auto") / "repository"
    write_overlay(REPOSITORY, target, kind="auto", tensorrt=True)
    yield from run_server(target, tmp_path_factory.mktemp("triton_overlay") / "server.log")


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_auto_overlay_serves_like_the_cpu_repository(auto_server, reference, protocol):
    served = infer(auto_server, protocol, "feedback_text", {"TEXT": text_tensor(TEXTS)})
    assert_same(served, reference.classify(TEXTS))
