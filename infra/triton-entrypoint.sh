#!/bin/sh
# tritonserver as the containers run it (docker-compose.yml and infra/k8s): the one place for its flags there.
# TRITON_ADMIN_KEY (required, from a secret) guards model-repository control, shared-memory registration, trace and
# log settings: HTTP clients send header `triton-admin-key`, gRPC clients `triton-grpc-protocol-triton-admin-key`.
# Extra arguments are passed on to tritonserver.
set -eu
key="${TRITON_ADMIN_KEY:-}"
case "$key" in
  "" | *[!A-Za-z0-9_-]*) echo "TRITON_ADMIN_KEY must be set, from A-Z a-z 0-9 _ - only" >&2; exit 2 ;;
esac
if [ "${#key}" -lt 16 ]; then echo "TRITON_ADMIN_KEY must have at least 16 characters" >&2; exit 2; fi
admin="model-repository,shared-memory,trace,logging:triton-admin-key=$key"

exec tritonserver \
  --model-repository="${MODEL_REPOSITORY:-/srv/feedback/model_repository}" \
  --model-control-mode="${MODEL_CONTROL_MODE:-none}" \
  --repository-poll-secs="${POLL_SECS:-30}" \
  --strict-readiness=true \
  --grpc-restricted-protocol="$admin" \
  --http-restricted-api="$admin" \
  --log-info=true \
  "$@"
