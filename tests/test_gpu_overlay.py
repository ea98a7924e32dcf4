"""infra/gpu_overlay.py: the GPU variant of the repository is generated, valid, and serves the same answers.

No GPU here: the served check uses --instance-kind auto, which Triton resolves to CPU instances on this machine.
"""

import pytest
from tritonclient.grpc import model_config_pb2

from infra.gpu_overlay import write_overlay
from python_backend.layout import read_config
from tests.conftest import REPOSITORY, run_server
from tests.test_serving import TEXTS, assert_same, infer, text_tensor

GPU = model_config_pb2.ModelInstanceGroup.KIND_GPU


@pytest.fixture(scope="module")
def overlay(tmp_path_factory):
    target = tmp_path_factory.mktemp("overlay") / "gpu_repository"
    write_overlay(REPOSITORY, target, tensorrt=True)
    return target


def test_members_get_gpu_instances_and_accelerators(overlay):
    for name in ("transformer", "textcnn"):
        assert [group.kind for group in read_config(overlay / name).instance_group] == [GPU]
    transformer = read_config(overlay / "transformer")
    accelerators = transformer.optimization.execution_accelerators.gpu_execution_accelerator
    assert [a.name for a in accelerators] == ["tensorrt", "cuda"]
    source = read_config(REPOSITORY / "transformer")
    max_seq = int(source.parameters["max_seq_len"].string_value)
    elements = [f"{t.name}:{source.max_batch_size * max_seq}" for t in source.input]  # ragged: end to end
    lengths = [f"{b.target_name[0]}:{source.max_batch_size}x1" for b in source.batch_input]
    assert accelerators[0].parameters["trt_profile_max_shapes"] == ",".join(elements + lengths)
    # Everything but the device settings is the source's config.
    for name in ("transformer", "textcnn"):
        gpu, cpu = read_config(overlay / name), read_config(REPOSITORY / name)
        for changed in (gpu, cpu):
            changed.ClearField("instance_group")
            changed.ClearField("optimization")
        assert gpu == cpu


def test_python_steps_and_ensembles_are_copied_unchanged(overlay):
    for name in ("tokenizer", "fuse", "feedback", "feedback_text"):
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


@pytest.fixture(scope="module")
def auto_server(tmp_path_factory):
    target = tmp_path_factory.mktemp("overlay_auto") / "repository"
    write_overlay(REPOSITORY, target, kind="auto", tensorrt=True)
    with run_server(target, tmp_path_factory.mktemp("triton_overlay") / "server.log") as running:
        yield running


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_auto_overlay_serves_like_the_cpu_repository(auto_server, reference, protocol):
    served = infer(auto_server, protocol, "feedback_text", {"TEXT": text_tensor(TEXTS)})
    assert_same(served, reference.classify(TEXTS))
