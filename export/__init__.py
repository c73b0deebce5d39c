"""ONNX export of the inference networks: registry (which networks, `presenter export`'s work),
graph (the tracing call), syncformer and generator (their graphs), cli (the command)."""
