"""The admin endpoints answer only callers with the key; inference stays open to everyone.

The session server runs with restrictions on, as `make serve` does.
"""

import uuid

import pytest
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from server.flags import restriction_flags
from tests.test_serving import PROTOCOLS, TEXTS, assert_same, client, infer, text_tensor

REFUSED = "is restricted, expecting header"  # tritonserver's own message, for gRPC and HTTP


def assert_refused_without_key(server, protocol, *calls) -> None:
    """Each call(headers) is refused with no admin header and with a wrong key."""
    wrong = {name: "x" * 32 for name in server.admin_headers(protocol)}
    for headers in (None, wrong):
        for call in calls:
            with pytest.raises(InferenceServerException, match=REFUSED):
                call(headers)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_model_repository_control_needs_the_key(server, protocol):
    with client(server, protocol) as triton:
        assert_refused_without_key(
            server,
            protocol,
            lambda headers: triton.get_model_repository_index(headers=headers),
            lambda headers: triton.load_model("fuse", headers=headers),
            lambda headers: triton.unload_model("fuse", headers=headers),
        )
        admin = server.admin_headers(protocol)
        index = triton.get_model_repository_index(headers=admin)
        names = {m.name for m in index.models} if protocol == "grpc" else {m["name"] for m in index}
        assert {"feedback", "feedback_text", "fuse"} <= names
        # With the key the call gets through to model control, which refuses loads in poll mode for its own reason.
        with pytest.raises(InferenceServerException, match="not allowed if polling is enabled"):
            triton.load_model("fuse", headers=admin)
        assert triton.is_model_ready("fuse")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_shared_memory_registration_needs_the_key(server, protocol):
    key = f"feedback_security_{uuid.uuid4().hex[:8]}"
    handle = shm.create_shared_memory_region(key, f"/{key}", 64)
    admin = server.admin_headers(protocol)
    try:
        with client(server, protocol) as triton:
            assert_refused_without_key(
                server,
                protocol,
                lambda headers: triton.register_system_shared_memory(key, f"/{key}", 64, headers=headers),
                lambda headers: triton.get_system_shared_memory_status(headers=headers),
            )
            assert key not in str(triton.get_system_shared_memory_status(headers=admin))
            triton.register_system_shared_memory(key, f"/{key}", 64, headers=admin)
            try:
                assert key in str(triton.get_system_shared_memory_status(headers=admin))
                with pytest.raises(InferenceServerException, match=REFUSED):
                    triton.unregister_system_shared_memory(key)
            finally:
                triton.unregister_system_shared_memory(key, headers=admin)
            assert key not in str(triton.get_system_shared_memory_status(headers=admin))
    finally:
        shm.destroy_shared_memory_region(handle)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_inference_health_and_metadata_stay_open(server, reference, protocol):
    served = infer(server, protocol, "feedback_text", {"TEXT": text_tensor(TEXTS[:4])})  # no headers at all
    assert_same(served, reference.classify(TEXTS[:4]))
    with client(server, protocol) as triton:
        assert triton.is_server_ready() and triton.is_model_ready("feedback_text")
        assert triton.get_model_metadata("feedback_text")
        assert triton.get_model_config("feedback_text")


@pytest.mark.unit
@pytest.mark.parametrize("key", ["short", "has:colon-and-more-characters", "has=equals-and-more-characters", ""])
def test_a_key_the_flag_cannot_carry_is_refused_before_start(key):
    with pytest.raises(ValueError, match="at least 16 characters"):
        restriction_flags(key)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_trace_and_log_settings_need_the_key(server, protocol):
    with client(server, protocol) as triton:
        assert_refused_without_key(
            server,
            protocol,
            lambda headers: triton.get_trace_settings(headers=headers),
            lambda headers: triton.update_log_settings({"log_verbose_level": 1}, headers=headers),
        )
        admin = server.admin_headers(protocol)
        assert triton.get_trace_settings(headers=admin)
        assert triton.get_log_settings(headers=admin)
