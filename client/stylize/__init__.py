"""Stylize on Triton: SDK, CLI and server launcher (no torch).

``from stylize import StylizeClient`` works; the client is imported lazily so that the server-side steps, which
import ``stylize.*`` inside Triton's python stubs, do not pay for tritonclient/gRPC.
"""

__version__ = "0.1.0"

_LAZY = {"StylizeClient": "stylize.sdk.client", "AsyncStylizeClient": "stylize.sdk.aio"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'stylize' has no attribute {name!r}")


__all__ = ["StylizeClient", "AsyncStylizeClient", "__version__"]
