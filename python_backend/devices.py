"""Which execution providers a member's config asks for: what the native onnxruntime backend does in NVIDIA's
container, done here for the Python-based stand-in (deploy/gpu_overlay.py writes these configs)."""


def onnxruntime_providers(config: dict, on_gpu: bool, device_id: int) -> list:
    """Providers in priority order: on a GPU instance TensorRT (if the config names it), then CUDA; CPU last, so
    that onnxruntime still runs the model where CUDA cannot be loaded."""
    if not on_gpu:
        return ["CPUExecutionProvider"]
    accelerators = config.get("optimization", {}).get("execution_accelerators", {}).get("gpu_execution_accelerator", [])
    parameters = {accelerator["name"]: accelerator.get("parameters", {}) for accelerator in accelerators}
    providers = []
    if "tensorrt" in parameters:
        providers.append(
            ("TensorrtExecutionProvider", {"device_id": device_id, **tensorrt_options(parameters["tensorrt"])})
        )
    providers.append(("CUDAExecutionProvider", {"device_id": device_id, **parameters.get("cuda", {})}))
    return [*providers, "CPUExecutionProvider"]


def tensorrt_options(parameters: dict[str, str]) -> dict:
    """Triton's TensorRT accelerator keys as onnxruntime's TensorRT provider options (the native backend's mapping)."""
    options = {}
    for key, value in parameters.items():
        if key == "precision_mode":
            options["trt_fp16_enable"] = value == "FP16"
            options["trt_int8_enable"] = value == "INT8"
        elif key == "max_workspace_size_bytes":
            options["trt_max_workspace_size"] = int(value)
        elif key.startswith("trt_"):
            options[key] = value
        else:
            raise ValueError(f"TensorRT accelerator parameter '{key}' is not one this backend maps")
    return options
