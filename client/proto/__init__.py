"""Wire format of the node's forget-request service (fedunlearn.requests.v1).

The ``*_pb2*`` modules are generated from ``forget_requests.proto``; never edit
them by hand, change the .proto and regenerate so the two cannot drift apart.
"""

# Regenerate with scripts/gen-proto.sh, which runs (from the repository root):
# python -m grpc_tools.protoc -I . --python_out=. --grpc_python_out=. --pyi_out=. client/proto/forget_requests.proto
