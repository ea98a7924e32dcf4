"""Shared-memory regions a client creates once, reuses for every call, grows when a batch needs more, and releases.

A region is registered with the server under a name unique to its client (process id + random suffix), so two clients
never collide. `release` unregisters it from the server and frees it (unlinks /dev/shm, or frees the GPU buffer);
FeedbackClient calls it on close, on interpreter exit, and when a registration is lost (server restart).
"""

import os
import time
import uuid
import warnings

import numpy as np
from tritonclient.utils import serialize_byte_tensor, triton_to_np_dtype

with warnings.catch_warnings():  # tritonclient 2.51 imports pkg_resources, which warns on every import
    warnings.simplefilter("ignore", UserWarning)
    import tritonclient.utils.shared_memory as system_shm

from client.errors import SharedMemoryError

ALIGNMENT = 64  # tensors start on cache-line boundaries inside a region
MIN_SIZE = 4096


def unique_prefix() -> str:
    return f"feedback_{os.getpid()}_{uuid.uuid4().hex[:8]}"


def align(size: int) -> int:
    return -(-size // ALIGNMENT) * ALIGNMENT


def as_bytes(array: np.ndarray) -> np.ndarray:
    """Tensors as they lie in a region: BYTES tensors in Triton's length-prefixed serialization, others as they are."""
    if array.dtype == np.object_:
        return np.frombuffer(serialize_byte_tensor(array).item(), dtype=np.uint8)
    return np.ascontiguousarray(array)


def cuda_module():
    """tritonclient's CUDA shared-memory module, or a SharedMemoryError that says what is missing."""
    try:
        with warnings.catch_warnings():  # cuda-python 12.9 warns that tritonclient imports its deprecated `cuda.cuda`
            warnings.simplefilter("ignore", FutureWarning)
            import tritonclient.utils.cuda_shared_memory as cuda_shm
            from cuda import cudart
    except ImportError as error:
        raise SharedMemoryError(f"shm='cuda' needs cuda-python 12.x (from cuda import cudart): {error}") from error
    status, count = cudart.cudaGetDeviceCount()
    if status != cudart.cudaError_t.cudaSuccess or not count:
        raise SharedMemoryError(f"shm='cuda' needs an NVIDIA GPU and driver on this machine (CUDA says: {status.name})")
    return cuda_shm


class Region:
    """One shared-memory region registered with a Triton server (tritonclient gRPC or HTTP client)."""

    def __init__(self, triton, name: str, kind: str, headers: dict[str, str] | None = None, device_id: int = 0):
        self.triton, self.name, self.kind, self.headers, self.device_id = triton, name, kind, headers, device_id
        self.module = cuda_module() if kind == "cuda" else system_shm
        self.handle = None
        self.byte_size = 0

    def reserve(self, byte_size: int) -> None:
        """Make the region at least byte_size bytes: re-create and re-register it (doubling) when it is smaller."""
        if byte_size <= self.byte_size:
            return
        size = max(byte_size, 2 * self.byte_size, MIN_SIZE)
        self.release()
        try:
            if self.kind == "cuda":
                self.handle = self.module.create_shared_memory_region(self.name, size, self.device_id)
            else:
                self.handle = self.module.create_shared_memory_region(self.name, f"/{self.name}", size)
        except Exception as error:  # tritonclient raises its own exception types per module
            raise SharedMemoryError(f"cannot create {self.kind} shared memory region {self.name}: {error}") from error
        self.byte_size = size
        self.register()

    def register(self) -> None:
        if self.kind == "cuda":
            raw = self.module.get_raw_handle(self.handle)
            self.triton.register_cuda_shared_memory(
                self.name, raw, self.device_id, self.byte_size, headers=self.headers
            )
        else:
            self.triton.register_system_shared_memory(self.name, f"/{self.name}", self.byte_size, headers=self.headers)

    def unregister(self) -> None:
        if self.kind == "cuda":
            self.triton.unregister_cuda_shared_memory(self.name, headers=self.headers)
        else:
            self.triton.unregister_system_shared_memory(self.name, headers=self.headers)

    def write(self, arrays: list[np.ndarray]) -> list[tuple[int, int]]:
        """Copy arrays in one after another (aligned); return each one's (offset, byte_size)."""
        raw = [as_bytes(a) for a in arrays]
        places, offset = [], 0
        for data in raw:
            places.append((offset, data.nbytes))
            offset = align(offset + data.nbytes)
        self.reserve(offset)
        for data, (offset, _) in zip(raw, places, strict=True):
            self.module.set_shared_memory_region(self.handle, [data], offset=offset)
        return places

    def read(self, datatype: str, shape: list[int], offset: int) -> np.ndarray:
        array = self.module.get_contents_as_numpy(self.handle, triton_to_np_dtype(datatype), shape, offset=offset)
        return np.array(array)  # a copy: the region is overwritten by the next call

    def release(self, in_use_wait: float = 5.0) -> None:
        """Unregister from the server and free the memory.

        Triton refuses to unregister a region a request still uses ("currently in use"), e.g. after a client-side
        timeout: wait for it up to in_use_wait seconds. Other failures mean the server is gone or restarted and has
        nothing registered; the memory is freed in every case.
        """
        if self.handle is None:
            return
        deadline = time.monotonic() + in_use_wait
        while True:
            try:
                self.unregister()
                break
            except Exception as error:
                if "in use" not in str(error) or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        self.module.destroy_shared_memory_region(self.handle)
        self.handle, self.byte_size = None, 0
