#!/usr/bin/env bash
# Regenerate client/proto/*_pb2* from client/proto/forget_requests.proto with the
# venv's grpcio-tools. Run from anywhere; commit the generated files with the .proto.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
OUT=client/proto

# -I . (not -I client/proto): protoc then names the module client.proto.forget_requests_pb2,
# so the gRPC stub already imports it absolutely and works as the package client.proto.
"$PYTHON" -m grpc_tools.protoc -I . --python_out=. --grpc_python_out=. --pyi_out=. \
    "$OUT/forget_requests.proto"

# Safety net for a protoc run with -I client/proto: turn a bare sibling import into a package one.
sed -i -E 's/^import forget_requests_pb2 as /from client.proto import forget_requests_pb2 as /' \
    "$OUT/forget_requests_pb2_grpc.py"

if ! grep -q '^from client.proto import forget_requests_pb2 as ' "$OUT/forget_requests_pb2_grpc.py"; then
    echo "error: $OUT/forget_requests_pb2_grpc.py does not import client.proto.forget_requests_pb2" >&2
    exit 1
fi
"$PYTHON" -c 'import client.proto.forget_requests_pb2_grpc' \
    || { echo "error: the regenerated client.proto modules do not import" >&2; exit 1; }
echo "regenerated $OUT/forget_requests_pb2.py, forget_requests_pb2.pyi, forget_requests_pb2_grpc.py"
