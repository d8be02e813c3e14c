"""What tritonserver itself loads: the ``model.py`` files the build copies into the model repository (the image
step ``image/``, the request check ``request_check/``) and the Python-based backends (``backends/<runtime>/``,
found through --backend-directory). These run inside Triton's python stubs, never in the client."""
