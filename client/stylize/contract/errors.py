"""Typed errors of the SDK. No tritonclient or grpc exception reaches the user: every one is mapped here.

StylizeError            base of everything the SDK raises on purpose
├── ServerUnavailable   cannot reach the server, or it is shutting down (gRPC UNAVAILABLE); retried with backoff
│   └── InstanceFailed  a model instance's process died (INTERNAL "Stub process ... is not healthy"): the server
│                       reloads that model (stylize.server.healing), so it is retried like UNAVAILABLE
├── ModelNotFound       unknown model or model version (gRPC NOT_FOUND)
├── InvalidInput        the request was refused; ``reason`` is the server's (or the SDK's) explanation
├── Timeout             the deadline passed (gRPC DEADLINE_EXCEEDED)
├── AccessDenied        an admin API refused the call: no or a wrong admin key (stylize.contract.access); not retried
└── ServerError         anything else the server reported (INTERNAL, ...)
"""

from __future__ import annotations

import re

from stylize.contract import access

# "in ensemble 'animeganv2', not a recognised image": Triton prefixes a composing step's error with its ensemble,
# once per level (the image step sits in a nested ensemble: "in ensemble 'x', in ensemble 'x_cached', ...").
_ENSEMBLE_PREFIX = re.compile(r"^(?:in ensemble '[^']*', )+")


class StylizeError(Exception):
    """Base class. ``status`` is the gRPC status name when the error came from the server (else None)."""

    kind = "error"

    def __init__(self, message: str, *, model: str | None = None, status: str | None = None, url: str | None = None):
        super().__init__(message)
        self.message = message
        self.model = model
        self.status = status
        self.url = url


class ServerUnavailable(StylizeError, ConnectionError):
    kind = "unavailable"


class InstanceFailed(ServerUnavailable):
    """The python stub that held one instance of the model died; the request did not run to its end. Retrying is
    safe (inference has no side effects) and the next try reaches another instance, or the reloaded one."""

    kind = "instance_failed"


# Triton 2.51's python backend, when the stub of the instance a request reached is dead
_DEAD_STUB = re.compile(r"Stub process '[^']*' is not healthy")


class ModelNotFound(StylizeError, LookupError):
    kind = "not_found"


class InvalidInput(StylizeError, ValueError):
    """``reason`` is the explanation without Triton's ensemble prefix, e.g. 'not a recognised image (...)'."""

    kind = "invalid_input"

    def __init__(self, message: str, *, reason: str | None = None, **kw: str | None):
        super().__init__(message, **kw)
        self.reason = reason if reason is not None else message


class Timeout(StylizeError, TimeoutError):
    kind = "timeout"


class ServerError(StylizeError):
    kind = "server_error"


class AccessDenied(StylizeError, PermissionError):
    """Triton answers a restricted API without the admin key with gRPC UNAVAILABLE: it must not look like (and be
    retried as) a server that is down."""

    kind = "access_denied"


_BY_STATUS: dict[str, type[StylizeError]] = {
    "UNAVAILABLE": ServerUnavailable,
    "NOT_FOUND": ModelNotFound,
    "INVALID_ARGUMENT": InvalidInput,
    "FAILED_PRECONDITION": InvalidInput,
    "OUT_OF_RANGE": InvalidInput,
    "RESOURCE_EXHAUSTED": InvalidInput,  # message larger than a channel limit
    "DEADLINE_EXCEEDED": Timeout,
}


def status_name(status: object) -> str | None:
    """'StatusCode.UNAVAILABLE' (tritonclient's string) or a grpc.StatusCode -> 'UNAVAILABLE'."""
    if status is None:
        return None
    name = getattr(status, "name", None) or str(status)
    return name.rsplit(".", 1)[-1]


def from_status(status: object, message: str, *, model: str | None = None, url: str | None = None) -> StylizeError:
    """Build the typed error for a gRPC status and the server's message."""
    name = status_name(status)
    cls = _BY_STATUS.get(name or "", ServerError)
    text = message or (name or "unknown error")
    where = f" (model {model!r})" if model else ""
    if access.is_refusal(text):
        return AccessDenied(
            f"{text}{where}: this API needs the admin key ({access.ADMIN_KEY_ENV})", model=model, status=name, url=url
        )
    if name == "INTERNAL" and _DEAD_STUB.search(text):
        return InstanceFailed(
            f"{_ENSEMBLE_PREFIX.sub('', text)}{where}: a model instance died; the server reloads it",
            model=model,
            status=name,
            url=url,
        )
    if cls is InvalidInput:
        reason = _ENSEMBLE_PREFIX.sub("", text)
        return InvalidInput(f"invalid input{where}: {reason}", reason=reason, model=model, status=name, url=url)
    if cls is ServerUnavailable:
        return ServerUnavailable(
            f"server {url or ''} unavailable: {text}".replace("  ", " "), model=model, status=name, url=url
        )
    return cls(f"{text}{where}" if cls is not ModelNotFound else text, model=model, status=name, url=url)


def from_triton(exc: BaseException, *, model: str | None = None, url: str | None = None) -> StylizeError:
    """Map a tritonclient InferenceServerException (or a raw grpc.RpcError) onto the typed errors."""
    if isinstance(exc, StylizeError):
        return exc
    status = None
    message = str(exc)
    if hasattr(exc, "status") and hasattr(exc, "message") and callable(exc.message):  # InferenceServerException
        status, message = exc.status(), exc.message() or ""
    elif hasattr(exc, "code") and callable(exc.code):  # grpc.RpcError / grpc.aio.AioRpcError
        status = exc.code()
        details = getattr(exc, "details", None)
        message = (details() if callable(details) else None) or message
    return from_status(status, message, model=model, url=url)


__all__ = [
    "StylizeError",
    "ServerUnavailable",
    "InstanceFailed",
    "ModelNotFound",
    "InvalidInput",
    "Timeout",
    "ServerError",
    "AccessDenied",
    "from_status",
    "from_triton",
    "status_name",
]
