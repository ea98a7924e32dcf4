#!/usr/bin/env bash
# The same bench suite with the members on KIND_GPU instances, on a machine with an NVIDIA GPU and no package
# registry. NOT RUN ON A GPU YET: written and checked on a CPU-only machine.
#
# Needs, already on the machine:
#   - an NVIDIA driver (nvidia-smi works) and Python 3.11;
#   - either this checkout's .venv already installed, or WHEELS=<dir> holding every wheel of requirements.txt, built
#     beforehand with `pip download -r requirements.txt -d <dir>` on a machine of the same platform, plus a CUDA torch
#     wheel of the pinned version (torch==2.13.0 from PyPI is the CPU build: bring e.g. the cu12x build of 2.13.0 and
#     name it in TORCH_WHEEL). onnxruntime-gpu 1.31.1 (pinned) needs CUDA 13 and cuDNN 9 libraries on the loader's
#     path for its CUDA execution provider; without them it logs an error and falls back to CPU, and the Triton log
#     (raw/<profile>/triton.log) says which providers ran.
#   - the exported repositories: model_repository/ (make export) and, for PROFILE=fast, build/fast_repository.
# The embedded tritonserver from nvidia-pytriton is a GPU build, so the same launcher serves KIND_GPU instances.
#
# Usage: perf/gpu.sh [BENCH=quick|full] [PROFILE="accurate fast"]
# `python -m perf --gpu` serves each profile's members as infra/gpu_overlay.py writes them for NVIDIA's container
# (KIND_GPU instances, onnxruntime's CUDA execution provider), and runs the in-process limit on the GPU too.
set -euo pipefail
cd "$(dirname "$0")/.."
for arg in "$@"; do export "$arg"; done
BENCH=${BENCH:-quick}
PROFILE=${PROFILE:-accurate fast}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || {
    echo "perf/gpu.sh: no NVIDIA GPU visible (nvidia-smi failed)" >&2
    exit 1
}
if [[ -n "${WHEELS:-}" ]]; then
    test -d .venv || python3 -m venv .venv
    .venv/bin/python -m pip install --no-index --find-links "$WHEELS" -r requirements.txt
    if [[ -n "${TORCH_WHEEL:-}" ]]; then
        .venv/bin/python -m pip install --no-index --no-deps --force-reinstall "$TORCH_WHEEL"
    fi
fi
.venv/bin/python -c 'import torch; assert torch.cuda.is_available(), "torch has no CUDA: bring a CUDA torch wheel"'
profiles=()
for profile in $PROFILE; do profiles+=(--profile "$profile"); done
exec .venv/bin/python -m perf --gpu --mode "$BENCH" "${profiles[@]}"
