"""The KServe v2 HTTP/JSON inference protocol, for the v0 and v1 web apps the benchmark compares Triton with.

Speaking the protocol Triton speaks lets the same real perf_analyzer (`-i http`, JSON tensors) drive every system, so
the client's cost is the same for all of them. Only the endpoints perf_analyzer uses are here.
"""

import json
from collections.abc import Awaitable, Callable

import numpy as np
from fastapi import FastAPI, Request, Response
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2

from python_backend.errors import BadRequest

Arrays = dict[str, np.ndarray]
Infer = Callable[[Arrays], Awaitable[Arrays]]

DTYPES = {"INT64": np.int64, "INT32": np.int32, "FP32": np.float32, "BYTES": np.object_}
CONFIG_DTYPES = {"TYPE_INT64": "INT64", "TYPE_INT32": "INT32", "TYPE_FP32": "FP32", "TYPE_STRING": "BYTES"}


def decode_tensors(tensors: list[dict]) -> Arrays:
    """JSON tensors ({name, shape, datatype, data}) to numpy arrays; anything malformed is a BadRequest."""
    arrays = {}
    for tensor in tensors:
        try:
            dtype = DTYPES[tensor["datatype"]]
            data = tensor["data"]
            if dtype is np.object_:
                data = [item.encode() if isinstance(item, str) else item for item in data]
            arrays[tensor["name"]] = np.array(data, dtype=dtype).reshape(tensor["shape"])
        except (KeyError, TypeError, ValueError) as error:
            raise BadRequest(f"malformed input tensor {tensor.get('name', '?')!r}: {error}") from None
    return arrays


def encode_tensors(arrays: Arrays) -> list[dict]:
    tensors = []
    for name, array in arrays.items():
        if array.dtype == np.object_:
            data = [item.decode() if isinstance(item, bytes) else item for item in array.ravel().tolist()]
            datatype = "BYTES"
        else:
            data = array.ravel().tolist()
            datatype = next(key for key, value in DTYPES.items() if value == array.dtype)
        tensors.append({"name": name, "datatype": datatype, "shape": list(array.shape), "data": data})
    return tensors


def metadata(config: model_config_pb2.ModelConfig) -> dict:
    def describe(tensor) -> dict:
        batch = [-1] if config.max_batch_size > 0 else []
        datatype = CONFIG_DTYPES[model_config_pb2.DataType.Name(tensor.data_type)]
        return {"name": tensor.name, "datatype": datatype, "shape": batch + list(tensor.dims)}

    return {
        "name": config.name,
        "versions": ["1"],
        "platform": config.platform or config.backend,
        "inputs": [describe(t) for t in config.input],
        "outputs": [describe(t) for t in config.output],
    }


def app(*models: tuple[model_config_pb2.ModelConfig, Infer]) -> FastAPI:
    """A server for models named as each `config`, each answering with its `infer(inputs)`.

    A bad request gets HTTP 400 with {"error": message}, as Triton answers; the server keeps serving.
    """
    server = FastAPI()

    @server.get("/v2/health/ready")
    @server.get("/v2/health/live")
    async def ready() -> dict:
        return {}

    @server.get("/v2")
    async def server_metadata() -> dict:
        return {"name": "kserve-v2-json", "version": "1", "extensions": []}

    for config, infer in models:
        add_model(server, config, infer)
    return server


def add_model(server: FastAPI, config: model_config_pb2.ModelConfig, infer: Infer) -> None:
    name = config.name
    config_json = json_format.MessageToDict(config, preserving_proto_field_name=True)
    model_metadata = metadata(config)

    @server.get(f"/v2/models/{name}/ready")
    async def model_ready() -> dict:
        return {}

    @server.get(f"/v2/models/{name}")
    async def get_metadata() -> dict:
        return model_metadata

    @server.get(f"/v2/models/{name}/config")
    async def get_config() -> dict:
        return config_json

    @server.post(f"/v2/models/{name}/infer")
    async def post_infer(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
            outputs = await infer(decode_tensors(body["inputs"]))
        except (BadRequest, KeyError, TypeError, ValueError) as error:
            return Response(json.dumps({"error": str(error)}), status_code=400, media_type="application/json")
        answer = {"model_name": name, "model_version": "1", "outputs": encode_tensors(outputs)}
        if "id" in body:
            answer["id"] = body["id"]
        return Response(json.dumps(answer), media_type="application/json")
