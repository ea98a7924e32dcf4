"""Bounded queues, where a deployment turns them on: a flooded server refuses the excess quickly with a clear error
and keeps serving."""

from concurrent.futures import ThreadPoolExecutor

import pytest
from google.protobuf import text_format

from client import Backoff, FeedbackClient
from client.errors import ClientError, Overloaded
from export import configs
from python_backend.layout import parse_config, read_config
from tests.conftest import REPOSITORY, repository_copy, run_server
from tests.test_client import TEXTS, as_arrays, assert_same

TINY_QUEUE = 1


def test_no_model_has_a_queue_policy_by_default():
    """A queue policy costs every request up to 500 ms in tritonserver 2.51 (see export/configs.py)."""
    for path in sorted(REPOSITORY.glob("*/config.pbtxt")):
        config = read_config(path.parent)
        assert not config.dynamic_batching.HasField("default_queue_policy"), path


def test_the_bounded_queue_parses_as_a_rejecting_policy():
    config = parse_config(configs.dynamic_batching(bounded=True))
    policy = config.dynamic_batching.default_queue_policy
    assert policy.max_queue_size == configs.MAX_QUEUE_SIZE
    assert policy.default_timeout_microseconds == configs.QUEUE_TIMEOUT_US
    assert policy.timeout_action == policy.REJECT


@pytest.fixture(scope="module")
def tiny_queue_server(tmp_path_factory):
    """The repository with a queue of one request on `feedback_text`'s first step, where the floods go."""
    repository = repository_copy(tmp_path_factory.mktemp("tiny_queue") / "repository")
    config = read_config(repository / "tokenizer")
    policy = config.dynamic_batching.default_queue_policy
    policy.max_queue_size, policy.default_timeout_microseconds = TINY_QUEUE, configs.QUEUE_TIMEOUT_US
    policy.timeout_action = policy.REJECT
    (repository / "tokenizer" / "config.pbtxt").write_text(text_format.MessageToString(config))
    with run_server(repository, repository.parent / "server.log") as running:
        yield running


FLOODED = (TEXTS * 2)[:64]


def flood(server, protocol: str, backoff: Backoff, calls: int = 96) -> list:
    """`calls` concurrent batches of FLOODED's 64 rows; each outcome is a list of predictions or the ClientError
    raised."""
    url = server.grpc_url if protocol == "grpc" else server.http_url

    def one(_):
        with FeedbackClient(url, protocol=protocol, backoff=backoff) as client:
            try:
                return client.classify(FLOODED)
            except ClientError as error:
                return error

    with ThreadPoolExecutor(calls) as pool:
        return list(pool.map(one, range(calls)))


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_flood_is_refused_as_overloaded_and_the_server_keeps_serving(tiny_queue_server, reference, protocol):
    outcomes = flood(tiny_queue_server, protocol, Backoff(retries=0))
    errors = [o for o in outcomes if isinstance(o, ClientError)]
    assert errors, "a queue of one request took 96 concurrent calls without refusing any"
    assert all(isinstance(e, Overloaded) and e.exit_code == 8 for e in errors), {repr(e) for e in errors}
    assert "Exceeds maximum queue size" in str(errors[0])
    admitted = [o for o in outcomes if not isinstance(o, ClientError)]
    assert admitted, "the queue admitted none of the 96 calls"
    expected = reference.classify(FLOODED)
    for predictions in admitted:  # what got through a flood is answered as in-process, not just answered
        assert_same(as_arrays(predictions), expected)
    with FeedbackClient(tiny_queue_server.grpc_url) as client:
        assert_same(as_arrays(client.classify(TEXTS)), reference.classify(TEXTS))


def test_retrying_client_gets_every_answer_through_a_flood(tiny_queue_server, reference):
    outcomes = flood(tiny_queue_server, "grpc", Backoff(retries=30, base=0.05, cap=1.0), calls=32)
    assert not [o for o in outcomes if isinstance(o, ClientError)]
    expected = reference.classify(FLOODED)
    for predictions in outcomes:
        assert_same(as_arrays(predictions), expected)
