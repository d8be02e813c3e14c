"""The embedded Triton server: launcher, Python-based ONNX Runtime backend, ensemble steps."""
