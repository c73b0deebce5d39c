"""Inference engines behind one protocol (base.Engine): torch_engine (the reference), onnxruntime
(CPU, CUDA provider when present), tensorrt (written to its API, not run here); bench: `presenter
bench networks`."""
