"""The contract every part of Stylize shares: the model descriptors (every Triton name, tensor and default is made
there and nowhere else), the errors a client sees, the admin-API rule, the tiling plan and atomic file writes.

Imports only the standard library and numpy (an import-linter contract in pyproject.toml keeps it so): the SDK,
the server, the model code inside tritonserver and the build all stand on it.
"""
