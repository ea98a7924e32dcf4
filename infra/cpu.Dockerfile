# The embedded server on Debian 12, CPU only: `make serve`'s path in an image. Python 3.11 (Debian's), the pinned
# wheels (requirements*.txt, `make venv`), Triton's native onnxruntime/pytorch backends built by
# server/native_backends.py from the upstream tarballs, and the exported repository, served by `python -m server`
# (tritonserver 2.51 under the supervisor). Build context: build/container-context (infra/container_context.py);
# `python -m infra.images` builds it. The GPU profile keeps NVIDIA's image (infra/Dockerfile).
FROM docker.io/library/debian:bookworm AS python
ARG DEBIAN_FRONTEND=noninteractive
# libpython3.11: the Python backend's stub links the interpreter's shared library. No ca-certificates: the build
# borrows the host's bundle (infra/images.py), and the server makes no outbound TLS connections.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 libpython3.11 \
    && rm -rf /var/lib/apt/lists/*

FROM python AS build
# The host's CA bundle for pip (infra/images.py): a build argument, so it stays out of the image's environment.
ARG PIP_CERT
# Only here: make and python3-venv (`make venv`); the backends' compilers come from server/debian.py's ensure.
RUN apt-get update \
    && apt-get install -y --no-install-recommends make python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /srv/feedback
# The wheels change least, so they come first and their layer is reused while the code changes.
COPY Makefile pyproject.toml requirements.txt requirements-no-deps.txt conventions.py ./
COPY client client
RUN make venv PYTHON=python3 && rm -rf /root/.cache/pip
# Only what the backends' build runs, so that changing the rest of server/ does not rebuild them.
COPY server/__init__.py server/debian.py server/native_backends.py server/
COPY third_party third_party
RUN TRITON_SOURCE_DIR=/srv/feedback/third_party .venv/bin/python -m server.native_backends \
    && rm -rf build/native/*.log

FROM python
WORKDIR /srv/feedback
COPY --from=build /srv/feedback/.venv .venv
COPY --from=build /srv/feedback/build/native build/native
COPY pyproject.toml conventions.py ./
COPY client client
COPY server server
COPY python_backend python_backend
COPY model_repository model_repository
ENV PATH=/srv/feedback/.venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/tmp \
    BIND=0.0.0.0 \
    MODEL_CONTROL=explicit
# At build time, everything a read-only root filesystem cannot take at run time: the bytecode of every module and of
# each version folder's model.py (server/backends.py's precompile: the stub would otherwise write __pycache__ there),
# and the backend directory build/backends/<hash>. The run then only checks that they are there.
# MODEL_CONTROL=explicit: the supervisor heals a dead stub through the repository API, not by touching the read-only
# repository's folders.
RUN python -m compileall -q client server python_backend \
    && python -c "from server import ROOT; from server.backends import prepare; print(prepare(ROOT / 'model_repository', ROOT / 'build'))" \
    && useradd --system --uid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin feedback
# The canary (every ensemble answers, right), as the compose healthcheck runs it.
HEALTHCHECK --interval=10s --timeout=8s --start-period=120s --retries=3 CMD ["python", "-m", "server.probe", "--timeout", "3"]
USER feedback
EXPOSE 8000 8001 8002
ENTRYPOINT ["python", "-m", "server"]
