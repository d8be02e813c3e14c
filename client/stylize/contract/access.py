"""Who may call Triton's admin APIs: the restriction every server of this project runs with (contract: imports
nothing of ours; the launcher, the k8s manifests, the SDK and the tests read it).

Triton 2.51 serves every API to anyone who reaches a port, including the ones that change the server: loading a
model whose request carries its own ``model.py`` runs that code in the server (explicit model-control mode), shared
memory registration maps regions, the trace and logging settings write files and change verbosity. With
``--http-restricted-api`` / ``--grpc-restricted-protocol`` those APIs answer only requests that carry a header
with the admin key: HTTP 403 without it, and gRPC UNAVAILABLE "This protocol is restricted" (sic: not
PERMISSION_DENIED). Inference, health, metadata and statistics stay open.

The key: ``STYLIZE_ADMIN_KEY`` wherever it is set (the k8s Secret ``triton-admin-key`` sets it in the pod). A
local server started without one gets a random key per start that is never printed; the process that started it
reads it from ``TritonServer.admin_key``. Triton takes the key on its command line only, so local users who can
list processes (``ps``) can read it: the restriction protects against the network, not against the machine.
"""

from __future__ import annotations

import re
import secrets

ADMIN_KEY_ENV = "STYLIZE_ADMIN_KEY"
ADMIN_HEADER = "stylize-admin-key"  # the HTTP header; gRPC metadata key: GRPC_HEADER_PREFIX + ADMIN_HEADER
GRPC_HEADER_PREFIX = "triton-grpc-protocol-"  # Triton prepends it to the gRPC restriction's header name

# Triton's category names (src/restricted_features.h of r24.10); one group, one key
RESTRICTED_APIS = ("model-repository", "model-config", "shared-memory", "logging", "trace")

_KEY = re.compile(r"[!-~]{16,}")  # printable ASCII without spaces (a header value), long enough to not be guessed


def new_key() -> str:
    return secrets.token_urlsafe(32)


def check_key(key: str) -> str:
    """The key, if it can be a header value that is hard to guess; ValueError (without the key) otherwise."""
    if not _KEY.fullmatch(key):
        raise ValueError(f"{ADMIN_KEY_ENV} must be at least 16 printable ASCII characters without spaces")
    return key


def restriction_args(key: str) -> list[str]:
    """The tritonserver flags that restrict :data:`RESTRICTED_APIS` to requests with the key (both endpoints).

    ``key`` may be a Kubernetes reference such as ``$(STYLIZE_ADMIN_KEY)``, expanded by the kubelet.
    """
    apis = ",".join(RESTRICTED_APIS)
    return [
        f"--http-restricted-api={apis}:{ADMIN_HEADER}={key}",
        f"--grpc-restricted-protocol={apis}:{ADMIN_HEADER}={key}",
    ]


def http_headers(key: str | None) -> dict[str, str]:
    return {ADMIN_HEADER: key} if key else {}


def grpc_headers(key: str | None) -> dict[str, str]:
    return {GRPC_HEADER_PREFIX + ADMIN_HEADER: key} if key else {}


def is_refusal(message: str) -> bool:
    """Triton's answer to a restricted call without the right key (HTTP 403 body, gRPC UNAVAILABLE details)."""
    return "This API is restricted" in message or "This protocol is restricted" in message


def redact(text: str, key: str | None) -> str:
    return text.replace(key, "<admin key>") if key else text


__all__ = [
    "ADMIN_KEY_ENV",
    "ADMIN_HEADER",
    "GRPC_HEADER_PREFIX",
    "RESTRICTED_APIS",
    "new_key",
    "check_key",
    "restriction_args",
    "http_headers",
    "grpc_headers",
    "is_refusal",
    "redact",
]
