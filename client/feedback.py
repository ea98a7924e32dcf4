"""FeedbackClient: the `feedback_text` / `feedback` ensembles over gRPC or HTTP, with optional shared-memory tensors.

    with FeedbackClient("localhost:8001", shm="system") as client:
        for p in client.classify(["the invoice charged me twice"]):
            print(p.label, p.probabilities[p.label])

Each in-flight request gets a slot: its own tritonclient connection and, with shm, its own input and output region,
created on first use, grown when a batch needs more, and reused for every later call. Calls are retried with
exponential backoff when the server is unavailable, times out, is overloaded or lost its registrations (a restart):
inference is idempotent, so a retried call returns what the first would have.
"""

import functools
import queue
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from client import predictions
from client.admin import admin_headers
from client.errors import SharedMemoryError, Timeout, translate
from client.predictions import INBAND_OUTPUTS, SHM_OUTPUTS, Prediction, Schema, TenantPrediction
from client.shm import Region, unique_prefix

PROTOCOLS = {"grpc": grpcclient, "http": httpclient}
SHM_KINDS = ("none", "system", "cuda")
DEFAULT_URLS = {"grpc": "localhost:8001", "http": "localhost:8000"}
# How long close() lets the requests still running on the server finish (in all) before it closes their channels.
DRAIN_SECS = 10.0


class Backoff:
    """Delays between retries: base, 2*base, 4*base, ... capped at `cap` seconds, `retries` of them.

    Each delay is drawn between half and all of that (jitter), so that clients refused together (a full queue, a
    restart) do not all come back in the same instant.
    """

    def __init__(self, retries: int = 5, base: float = 0.25, cap: float = 4.0):
        self.retries, self.base, self.cap = retries, base, cap

    def delays(self) -> Iterator[float]:
        for attempt in range(self.retries):
            yield min(self.cap, self.base * 2**attempt) * random.uniform(0.5, 1.0)


class Slot:
    """One connection and (with shm) one input and one output region: what a single in-flight request needs."""

    def __init__(self, client: "FeedbackClient", index: int):
        self.protocol = PROTOCOLS[client.protocol]
        # gRPC takes a deadline per call (used for all but inference, see wait_for), HTTP a socket timeout.
        connection, self.per_call = {}, {}
        self.answered = threading.Event()  # clear while a gRPC inference call is on this slot's channel
        self.answered.set()
        if client.timeout and self.protocol is grpcclient:
            self.per_call = {"client_timeout": client.timeout}
        elif client.timeout:
            connection = {"network_timeout": client.timeout, "connection_timeout": client.timeout}
        self.triton = self.protocol.InferenceServerClient(client.url, **connection)
        self.regions = {}
        if client.shm != "none":
            name = f"{client.prefix}_{index}"
            self.regions = {
                part: Region(self.triton, f"{name}_{part}", client.shm, client.headers) for part in ("in", "out")
            }

    def infer(self, model: str, inputs: dict[str, np.ndarray], schema: Schema, headers, timeout, extra=()) -> dict:
        """`extra`: outputs the model has beside the ensembles' common ones, always in the response."""
        tensors = []
        places = self.regions["in"].write(list(inputs.values())) if self.regions else None
        for i, (name, array) in enumerate(inputs.items()):
            tensor = self.protocol.InferInput(name, list(array.shape), predictions.datatype(array))
            if places:
                tensor.set_shared_memory(self.regions["in"].name, places[i][1], places[i][0])
            else:
                tensor.set_data_from_numpy(array)
            tensors.append(tensor)

        inband = (*INBAND_OUTPUTS, *extra)
        outputs = [self.protocol.InferRequestedOutput(name) for name in inband]
        shm_outputs = {}
        if self.regions:
            shapes = schema.output_shapes(len(next(iter(inputs.values()))))
            blank = [np.empty(shapes[name], np.float32) for name in SHM_OUTPUTS]
            for name, (offset, size) in zip(SHM_OUTPUTS, self.regions["out"].write(blank), strict=True):
                output = self.protocol.InferRequestedOutput(name)
                output.set_shared_memory(self.regions["out"].name, size, offset)
                outputs.append(output)
                shm_outputs[name] = offset
        else:
            outputs += [self.protocol.InferRequestedOutput(name) for name in SHM_OUTPUTS]

        if self.protocol is grpcclient:
            result = self.wait_for(model, tensors, outputs, headers, timeout)
        else:
            result = self.triton.infer(model, tensors, outputs=outputs, headers=headers)
        answer = {name: result.as_numpy(name) for name in inband}
        for name, offset in shm_outputs.items():
            answer[name] = self.regions["out"].read("FP32", shapes[name], offset)
        if not shm_outputs:
            answer |= {name: result.as_numpy(name) for name in SHM_OUTPUTS}
        return answer

    def wait_for(self, model: str, tensors: list, outputs: list, headers, timeout) -> grpcclient.InferResult:
        """Inference with the timeout kept on this side.

        A gRPC deadline cancels the request on the server when it passes, and tritonserver 2.51 can crash (SIGSEGV)
        when a cancellation races a completing request (server #7368, fixed in 2.53); so no deadline is sent. A
        request that times out here runs to completion on the server, still writing to this slot's regions, so
        FeedbackClient retires the slot instead of reusing it.
        """
        done, answer = threading.Event(), {}
        self.answered = done

        def callback(result, error):
            answer.update(result=result, error=error)
            done.set()

        self.triton.async_infer(model, tensors, callback, outputs=outputs, headers=headers)
        if not done.wait(timeout):
            raise Timeout(f"no answer from {model} within {timeout} s")
        if answer["error"] is not None:
            raise answer["error"]
        return answer["result"]

    def reregister(self) -> None:
        """After a server restart its registrations are gone; the regions are still ours."""
        for region in self.regions.values():
            if region.handle is not None:
                region.register()

    def close(self, drain: float = 0.0) -> None:
        """Closing a gRPC channel cancels the request still running on it, and tritonserver 2.51 then may crash
        (server #7368) or, when the cancellation reaches an ensemble before its parallel members start, count the
        request in flight for good (docs/pitfalls.md). So a request still running (one this side gave up on, or one
        another thread is waiting for) gets `drain` seconds to finish first."""
        self.answered.wait(drain)
        for region in self.regions.values():
            region.release()
        self.triton.close()


def close_slots(slots: list[Slot]) -> None:
    deadline = time.monotonic() + DRAIN_SECS
    while slots:
        slots.pop().close(drain=max(0.0, deadline - time.monotonic()))


class FeedbackClient:
    def __init__(
        self,
        url: str | None = None,
        protocol: str = "grpc",
        shm: str = "none",
        timeout: float | None = None,
        backoff: Backoff | None = None,
        headers: dict[str, str] | None = None,
        in_flight: int = 1,
        admin_key: str | None = None,
    ):
        """`timeout` bounds each attempt in seconds; `headers` go with every call; `in_flight` is how many requests
        classify_stream keeps going at once; `admin_key` is the key of a server whose shared-memory and repository
        endpoints are restricted (needed with shm, and for models())."""
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {sorted(PROTOCOLS)}, not {protocol!r}")
        if shm not in SHM_KINDS:
            raise ValueError(f"shm must be one of {SHM_KINDS}, not {shm!r}")
        if shm == "cuda" and protocol == "http":
            raise ValueError("CUDA shared memory is supported over gRPC only in this client")
        self.url, self.protocol, self.shm = url or DEFAULT_URLS[protocol], protocol, shm
        self.timeout, self.backoff = timeout, backoff or Backoff()
        self.headers = (headers or {}) | (admin_headers(protocol, admin_key) if admin_key else {}) or None
        self.prefix = unique_prefix()
        self.in_flight = in_flight
        self.slots: list[Slot] = []
        self.idle: queue.SimpleQueue[Slot] = queue.SimpleQueue()
        # Regions are released on close(), or at garbage collection / interpreter exit if close() was never called.
        self._finalizer = weakref.finalize(self, close_slots, self.slots)

    def __enter__(self) -> "FeedbackClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._finalizer()

    @functools.cached_property
    def schema(self) -> Schema:
        return Schema.from_fuse_config(self._ask("get_model_config", predictions.FUSE_MODEL))

    @functools.cached_property
    def max_text_bytes(self) -> int:
        """The longest comment the server takes, in UTF-8 bytes (the tokenizer config's max_text_bytes)."""
        config = self._ask("get_model_config", predictions.TOKENIZER_MODEL)
        return int(config.get("config", config)["parameters"]["max_text_bytes"]["string_value"])

    def _ask(self, method: str, *args):
        """A non-inference call on the server (as JSON over both protocols), with retries."""
        json = {"as_json": True} if self.protocol == "grpc" else {}
        return self._call(
            lambda slot: getattr(slot.triton, method)(*args, headers=self.headers, **json, **slot.per_call)
        )

    def _take_slot(self) -> Slot:
        try:
            return self.idle.get_nowait()
        except queue.Empty:
            slot = Slot(self, len(self.slots))
            self.slots.append(slot)
            return slot

    def _call(self, function):
        """Run function(slot) with a free slot, retrying what is worth retrying.

        A slot goes back to the pool after use unless its call timed out; retired slots are released by close().
        """
        slot = self._take_slot()
        try:
            delays = self.backoff.delays()
            while True:
                try:
                    return function(slot)
                except Exception as raw:
                    error = translate(raw, self.url)
                    if isinstance(error, Timeout):  # its request may still be writing to its regions: retire it
                        slot = self._take_slot()
                    lost_registration = isinstance(error, SharedMemoryError) and "Unable to find" in str(error)
                    delay = next(delays, None) if error.retryable or lost_registration else None
                    if delay is None:
                        raise error from raw
                    time.sleep(delay)
                    if lost_registration:
                        try:
                            slot.reregister()
                        except Exception as again:  # still restarting: the next attempt tries again
                            if not translate(again, self.url).retryable:
                                raise translate(again, self.url) from again
        finally:
            self.idle.put(slot)

    def infer(self, model: str, inputs: dict[str, np.ndarray], extra=()) -> dict[str, np.ndarray]:
        """One ensemble call with any number of rows (sent in chunks of the ensembles' max batch)."""
        parts = [
            self._call(lambda slot, part=part: slot.infer(model, part, self.schema, self.headers, self.timeout, extra))
            for part in predictions.chunks(inputs)
        ]
        return predictions.concat(parts)

    def classify(self, texts: list[str]) -> list[Prediction]:
        if not texts:
            return []
        return self.schema.predictions(self.infer(predictions.TEXT_MODEL, predictions.text_inputs(texts)))

    def classify_tenant(self, texts: list[str], tenant: str) -> list[TenantPrediction]:
        """`feedback_tenant`: each comment's label in the tenant's own label set (its head's), and the default one."""
        if not texts:
            return []
        outputs = self.infer(
            predictions.TENANT_MODEL, predictions.tenant_inputs(texts, tenant), predictions.TENANT_OUTPUTS
        )
        return self.schema.tenant_predictions(outputs, tenant)

    def classify_ids(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        """Pre-tokenized rows: PROBS [b,classes], LABEL [b,1] (bytes), MEMBER_PROBS [b,members,classes]."""
        return self.infer(predictions.IDS_MODEL, predictions.id_inputs(input_ids, attention_mask))

    def classify_stream(self, batches: Iterable[list[str]], classify: Callable | None = None) -> Iterator[list]:
        """Pipelined: keeps `in_flight` batches in flight and yields each batch's predictions in input order.
        `classify(batch)` is what each batch runs (self.classify unless given)."""
        with ThreadPoolExecutor(self.in_flight) as pool:
            pending: deque[Future] = deque()
            for batch in batches:
                pending.append(pool.submit(classify or self.classify, batch))
                if len(pending) >= self.in_flight:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

    # Server-level questions for the CLI and for checks.

    def server_ready(self) -> bool:
        return self._call(lambda slot: slot.triton.is_server_ready(headers=self.headers, **slot.per_call))

    def model_ready(self, model: str) -> bool:
        return self._call(lambda slot: slot.triton.is_model_ready(model, headers=self.headers, **slot.per_call))

    def models(self) -> list[dict]:
        """The repository index: name, version, state (and reason when not ready)."""
        index = self._ask("get_model_repository_index")
        return index.get("models", []) if isinstance(index, dict) else index

    def registered_regions(self) -> list[str]:
        """Names of the system shared-memory regions the server has registered (from all clients)."""
        status = self._ask("get_system_shared_memory_status")
        regions = status.get("regions", {}) if isinstance(status, dict) else status
        return [region["name"] for region in (regions.values() if isinstance(regions, dict) else regions)]
