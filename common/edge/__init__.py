"""Edge export and on-device inference: ONNX models with a hash-checked manifest."""
