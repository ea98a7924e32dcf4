"""The two architectures the Triton ensemble replaces, as FastAPI apps served by gunicorn's uvicorn workers (JSON).

v0 `monolith`: one web app with every model in memory, combining predictions in Python.
v1 `member` + `combiner`: one HTTP service per member model, and a thin app that fans each request out to all of
them and fuses the answers. Neither batches across requests; that is what they look like in the field.

All three speak KServe v2 HTTP/JSON (perf/kserve.py) and are configured by environment variables, because gunicorn
builds them by name in each worker (`gunicorn -k uvicorn.workers.UvicornWorker 'perf.apps:monolith()'`):
  BENCH_REPOSITORY  the model repository to load from (the same files Triton serves)
  BENCH_MEMBER      member: which member model to serve
  BENCH_MEMBER_URLS combiner: "name=http://host:port,..." for every member the fuse config names
"""

import asyncio
import os
from pathlib import Path

import httpx
import numpy as np
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from perf import kserve
from perf.app_checks import check_token_inputs
from python_backend.errors import BadRequest
from python_backend.inprocess import InProcessEnsemble, RepositoryFuse, load_member
from python_backend.layout import read_config
from python_backend.text import decode_rows


def _repository() -> Path:
    return Path(os.environ["BENCH_REPOSITORY"])


def _check_tokens(repository: Path):
    """The web apps check token ids in Python before running anything, as such apps do, with the limits of the
    fuse config (Triton's members repair and flag bad ids in the graph instead)."""
    parameters = {key: value.string_value for key, value in read_config(repository / "fuse").parameters.items()}
    vocab_size, max_seq_len = int(parameters["vocab_size"]), int(parameters["max_seq_len"])

    def check(inputs: kserve.Arrays) -> tuple[np.ndarray, np.ndarray]:
        ids, mask = inputs.get("INPUT_IDS"), inputs.get("ATTENTION_MASK")
        if ids is None or mask is None:
            raise BadRequest("expected inputs INPUT_IDS and ATTENTION_MASK")
        check_token_inputs(ids, mask, vocab_size, max_seq_len)
        return ids, mask

    return check


def _as_one_model(repository: Path, platform: str, ensemble: str = "feedback"):
    """An ensemble's config (name, inputs, outputs) for an app that serves it as one model."""
    config = read_config(repository / ensemble)
    config.ClearField("ensemble_scheduling")
    config.platform = platform
    return config


def monolith() -> FastAPI:
    """Text in (`feedback_text`): each request's comments tokenized at their true length, as such apps do, and
    classified with the same member files and fuse step; and token ids in (`feedback`)."""
    repository = _repository()
    ensemble = InProcessEnsemble(repository)
    check = _check_tokens(repository)
    max_bytes = int(read_config(repository / "tokenizer").parameters["max_text_bytes"].string_value)

    # Models run in the thread pool, as a plain `def` endpoint would: the event loop keeps accepting requests.
    async def infer_ids(inputs: kserve.Arrays) -> kserve.Arrays:
        return await run_in_threadpool(lambda: ensemble.classify_ids(*check(inputs)))

    async def infer_text(inputs: kserve.Arrays) -> kserve.Arrays:
        if "TEXT" not in inputs:
            raise BadRequest("expected input TEXT")
        texts = list(decode_rows(inputs["TEXT"], max_bytes))
        return await run_in_threadpool(lambda: ensemble.classify(texts))

    return kserve.app(
        (_as_one_model(repository, "v0-monolith"), infer_ids),
        (_as_one_model(repository, "v0-monolith", "feedback_text"), infer_text),
    )


def member() -> FastAPI:
    repository = _repository()
    name = os.environ["BENCH_MEMBER"]
    config = read_config(repository / name)
    run = load_member(repository, name)
    ids_name, mask_name = (tensor.name for tensor in config.input)
    output_names = [tensor.name for tensor in config.output]

    async def infer(inputs: kserve.Arrays) -> kserve.Arrays:
        outputs = await run_in_threadpool(run, inputs[ids_name], inputs[mask_name])
        return dict(zip(output_names, outputs, strict=True))

    return kserve.app((config, infer))


def combiner() -> FastAPI:
    repository = _repository()
    fuse = RepositoryFuse(repository)
    check = _check_tokens(repository)
    urls = dict(item.split("=", 1) for item in os.environ["BENCH_MEMBER_URLS"].split(","))
    members = []  # (url, input names, output names) in the fuse step's member order
    for name in fuse.member_names:
        config = read_config(repository / name)
        members.append((f"{urls[name]}/v2/models/{name}/infer", [t.name for t in config.input], config.output))
    client = httpx.AsyncClient(limits=httpx.Limits(max_connections=64), timeout=60)

    async def call(url: str, input_names: list[str], outputs, ids, mask) -> list[np.ndarray]:
        body = {"inputs": kserve.encode_tensors(dict(zip(input_names, (ids, mask), strict=True)))}
        answer = await client.post(url, json=body)
        answer.raise_for_status()
        decoded = kserve.decode_tensors(answer.json()["outputs"])
        return [decoded[output.name] for output in outputs]

    async def infer(inputs: kserve.Arrays) -> kserve.Arrays:
        ids, mask = check(inputs)
        member_outputs = await asyncio.gather(*(call(*member, ids, mask) for member in members))
        return fuse(list(member_outputs))

    return kserve.app((_as_one_model(repository, "v1-combiner"), infer))
