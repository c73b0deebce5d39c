"""Inference engines (torch, ONNX Runtime, TensorRT) behind one protocol; filled as models land."""
