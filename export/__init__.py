"""Model export to ONNX/TensorRT with parity checks; filled as models land."""
