"""The errors a caller can expect, each with the CLI exit code that reports it.

tritonclient raises InferenceServerException with a status ("StatusCode.X" over gRPC, an HTTP code over HTTP), or a
plain OSError/timeout when the HTTP client cannot reach the server. `translate` turns all of them into one of these.
"""

import socket

from tritonclient.utils import InferenceServerException


class ClientError(Exception):
    """Unexpected error."""

    exit_code = 1
    retryable = False


class ServerUnavailable(ClientError):
    """Server down, restarting, or not ready: safe to retry (inference is idempotent)."""

    exit_code = 3
    retryable = True


class ModelUnavailable(ClientError):
    """The model is not in the repository, or not loaded."""

    exit_code = 4


class InvalidInput(ClientError):
    """The server refused the input (wrong shape, dtype, token ids, text over the size limit)."""

    exit_code = 5


class Timeout(ClientError):
    """No answer within the timeout."""

    exit_code = 6
    retryable = True


class SharedMemoryError(ClientError):
    """A shared-memory region could not be created, registered or used (too small, not registered, no GPU)."""

    exit_code = 7


class Overloaded(ClientError):
    """The server refused the request because its queue is full: retry later."""

    exit_code = 8
    retryable = True


class AdminKeyRequired(ClientError):
    """The server restricts this endpoint (shared memory, model repository) to callers with its admin key."""

    exit_code = 9


ROWS_FAILED_EXIT_CODE = 10  # `classify --input`: the run finished, but some rows are error records
USAGE_EXIT_CODE = 2  # bad command-line arguments or an unreadable input file

_GRPC_STATUS = {
    "StatusCode.UNAVAILABLE": ServerUnavailable,
    "StatusCode.DEADLINE_EXCEEDED": Timeout,
    "StatusCode.INVALID_ARGUMENT": InvalidInput,
    "StatusCode.RESOURCE_EXHAUSTED": Overloaded,
}
# A member's bounded queue (dynamic_batching default_queue_policy) refuses with UNAVAILABLE (HTTP 503) and one of these.
_QUEUE_REFUSALS = ("Exceeds maximum queue size", "Request timeout expired")
_HTTP_STATUS = {"400": InvalidInput, "429": Overloaded, "503": ServerUnavailable, "504": Timeout}


def translate(error: Exception, url: str) -> ClientError:
    """Map whatever tritonclient raised to a ClientError with a message that says what to do."""
    if isinstance(error, ClientError):
        return error
    if isinstance(error, socket.timeout | TimeoutError):
        return Timeout(f"{url}: no answer within the timeout")
    if isinstance(error, OSError):
        return ServerUnavailable(f"{url}: cannot connect ({error.strerror or error}); is the server running?")
    if not isinstance(error, InferenceServerException):
        raise error
    status, message = str(error.status()), error.message() or str(error)
    if "protocol is restricted" in message or "API is restricted" in message or status == "403":
        return AdminKeyRequired(f"{message} (give the server's admin key: --admin-key or $TRITON_ADMIN_KEY)")
    if "shared memory" in message:
        return SharedMemoryError(message)
    if status in ("StatusCode.NOT_FOUND", "404") or "is not found" in message or "is not ready" in message:
        return ModelUnavailable(message)
    if any(refusal in message for refusal in _QUEUE_REFUSALS):
        return Overloaded(f"server overloaded, retry later ({message})")
    if "is not healthy" in message:  # a model's stub died; the supervisor reloads it (server/supervise.py)
        return ServerUnavailable(f"a model of the ensemble is being restarted, retry ({message})")
    if status == "StatusCode.UNAVAILABLE" and "connect" in message:
        return ServerUnavailable(f"{url}: cannot connect; is the server running? ({message})")
    kind = _GRPC_STATUS.get(status) or _HTTP_STATUS.get(status) or ClientError
    return kind(message)
