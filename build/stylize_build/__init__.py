"""Build side (needs torch): networks, weight import, ONNX/TensorRT export, repository writer."""
