#!/usr/bin/env bash
# Regenerate client/proto/*_pb2* from client/proto/forget_requests.proto with the
# venv's grpcio-tools. Run from anywhere; commit the generated files with the .proto.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
OUT=client/proto

# Through the namespace link tree that scripts/setup.sh keeps (-I .namespace, not -I client/proto):
# protoc then names the module fedunlearn.client.proto.forget_requests_pb2, so the gRPC stub
# imports it absolutely, as the installed package does. The files land in client/proto.
mkdir -p .namespace/fedunlearn && ln -sfn ../../client .namespace/fedunlearn/client
"$PYTHON" -m grpc_tools.protoc -I .namespace --python_out=.namespace --grpc_python_out=.namespace \
    --pyi_out=.namespace "fedunlearn/$OUT/forget_requests.proto"

# Safety net for a protoc run with -I client/proto: turn a bare sibling import into a package one.
sed -i -E 's/^import forget_requests_pb2 as /from fedunlearn.client.proto import forget_requests_pb2 as /' \
    "$OUT/forget_requests_pb2_grpc.py"

if ! grep -q '^from fedunlearn.client.proto import forget_requests_pb2 as ' "$OUT/forget_requests_pb2_grpc.py"; then
    echo "error: $OUT/forget_requests_pb2_grpc.py does not import fedunlearn.client.proto.forget_requests_pb2" >&2
    exit 1
fi
"$PYTHON" -c 'import fedunlearn.client.proto.forget_requests_pb2_grpc' \
    || { echo "error: the regenerated fedunlearn.client.proto modules do not import" >&2; exit 1; }
echo "regenerated $OUT/forget_requests_pb2.py, forget_requests_pb2.pyi, forget_requests_pb2_grpc.py"
