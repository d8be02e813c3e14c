"""Errors of starting and running a tritonserver (the launcher's; a client's are stylize.contract.errors)."""

from __future__ import annotations

from typing import Mapping

# ---------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------


class ServerError(Exception):
    """Base class of the launcher's errors; ``log_tail`` holds the last lines of the server log when known."""

    def __init__(self, message: str, *, log_tail: str = ""):
        super().__init__(message)
        self.log_tail = log_tail


class TritonNotFoundError(ServerError):
    """No tritonserver binary: neither on PATH nor in the nvidia-pytriton wheel (pip install '.[server]')."""


class StubEnvironmentError(ServerError):
    """The python backend stub would run with a broken environment (a shared library it links missing, numpy
    missing or numpy>=2, stylize missing)."""


class PortInUseError(ServerError):
    def __init__(self, message: str, *, port: int, log_tail: str = ""):
        super().__init__(message, log_tail=log_tail)
        self.port = port


class ModelRepositoryError(ServerError):
    """The repository is missing or empty, or models failed to load; ``failures`` maps model name -> reason."""

    def __init__(self, message: str, *, failures: Mapping[str, str] | None = None, log_tail: str = ""):
        super().__init__(message, log_tail=log_tail)
        self.failures = dict(failures or {})


class ServerStartError(ServerError):
    """tritonserver exited during startup for another reason (see ``log_tail``)."""


class ServerTimeoutError(ServerError):
    """The server did not become ready in time."""
