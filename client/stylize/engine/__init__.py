"""The image pipeline and the networks' runtimes, the same code wherever it runs: inside tritonserver (the image
step and the Python-based onnxruntime/openvino backends of stylize.server.triton_models), in process for the web
page's large photos, and in the build's checks and the bench. Imports stylize.contract only.
"""
