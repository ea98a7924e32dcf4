"""AsyncFeedbackClient: the same calls as FeedbackClient for asyncio code, on tritonclient.grpc.aio.

    async with AsyncFeedbackClient("localhost:8001") as client:
        results = await asyncio.gather(*(client.classify(batch) for batch in batches))

One gRPC channel carries every concurrent call; `in_flight` bounds how many are outstanding. Tensors travel in the
request (no shared memory: a region per outstanding call is what FeedbackClient's slots are for).
"""

import asyncio
import functools

import numpy as np
import tritonclient.grpc.aio as aioclient

from client import predictions
from client.errors import Timeout, translate
from client.feedback import DEFAULT_URLS, DRAIN_SECS, Backoff
from client.predictions import INBAND_OUTPUTS, SHM_OUTPUTS, Prediction, Schema


class AsyncFeedbackClient:
    def __init__(
        self,
        url: str = DEFAULT_URLS["grpc"],
        timeout: float | None = None,
        backoff: Backoff | None = None,
        headers: dict[str, str] | None = None,
        in_flight: int = 16,
    ):
        self.url, self.timeout, self.backoff, self.headers = url, timeout, backoff or Backoff(), headers
        self.triton = aioclient.InferenceServerClient(url)
        self.limit = asyncio.Semaphore(in_flight)
        self._schema: Schema | None = None
        self.running: set[asyncio.Future] = set()  # inference calls on the channel, timed out here or not

    async def __aenter__(self) -> "AsyncFeedbackClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        """Lets the calls still running on the server finish first, for up to DRAIN_SECS in all: closing the channel
        would cancel them (see FeedbackClient's Slot.close)."""
        deadline = asyncio.get_running_loop().time() + DRAIN_SECS
        while self.running and (left := deadline - asyncio.get_running_loop().time()) > 0:
            await asyncio.wait(set(self.running), timeout=left)
        await self.triton.close()

    async def _call(self, function):
        delays = self.backoff.delays()
        async with self.limit:
            while True:
                try:
                    return await function()
                except Exception as raw:
                    error = translate(raw, self.url)
                    delay = next(delays, None) if error.retryable else None
                    if delay is None:
                        raise error from raw
                    await asyncio.sleep(delay)

    async def schema(self) -> Schema:
        if self._schema is None:
            config = await self._call(
                functools.partial(
                    self.triton.get_model_config, predictions.FUSE_MODEL, headers=self.headers, as_json=True
                )
            )
            self._schema = Schema.from_fuse_config(config)
        return self._schema

    async def _wait_for(self, model: str, tensors: list, outputs: list):
        """The timeout stays on this side: a gRPC deadline or a cancelled call would cancel the request on the
        server, which can crash tritonserver 2.51 (see FeedbackClient's Slot.wait_for); shielded, it runs on."""
        call = asyncio.ensure_future(self.triton.infer(model, tensors, outputs=outputs, headers=self.headers))
        self.running.add(call)
        call.add_done_callback(self.running.discard)
        try:
            return await asyncio.wait_for(asyncio.shield(call), self.timeout)
        except TimeoutError:
            call.add_done_callback(lambda late: late.exception())  # retrieved, so asyncio does not warn
            raise Timeout(f"no answer from {model} within {self.timeout} s") from None

    async def _infer_one(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tensors = []
        for name, array in inputs.items():
            tensor = aioclient.InferInput(name, list(array.shape), predictions.datatype(array))
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        outputs = [aioclient.InferRequestedOutput(name) for name in INBAND_OUTPUTS + SHM_OUTPUTS]
        result = await self._call(lambda: self._wait_for(model, tensors, outputs))
        return {name: result.as_numpy(name) for name in INBAND_OUTPUTS + SHM_OUTPUTS}

    async def infer(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        parts = await asyncio.gather(*(self._infer_one(model, part) for part in predictions.chunks(inputs)))
        return predictions.concat(list(parts))

    async def classify(self, texts: list[str]) -> list[Prediction]:
        if not texts:
            return []
        schema = await self.schema()
        return schema.predictions(await self.infer(predictions.TEXT_MODEL, predictions.text_inputs(texts)))

    async def classify_ids(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        return await self.infer(predictions.IDS_MODEL, predictions.id_inputs(input_ids, attention_mask))
