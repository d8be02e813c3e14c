"""How a request travels: gRPC message limits, the retry policy (UNAVAILABLE only, backoff with jitter), what each
attempt reports to observers (ClientStats, stylize.sdk.metrics), and the errors of tritonclient and grpc that become
stylize.contract.errors."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Protocol

from stylize.contract.errors import ModelNotFound, ServerUnavailable, StylizeError

MAX_MESSAGE_BYTES = 2**31 - 1  # gRPC's hard ceiling (INT32_MAX); the server side uses the same


# ---------------------------------------------------------------------------------------------------------------
# Raw frames (the `<id>_net` path): padding to the network's size rules happens here, cropping after
# ---------------------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------------------
# Retries, statistics, observers
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff with jitter, on ServerUnavailable only.

    ``attempts`` counts the first try (None: no limit by count); ``deadline`` stops retrying once that many seconds
    have passed since the first try (None: no limit by time). A server restart takes tens of seconds, hence 60 s.
    """

    attempts: int | None = None
    deadline: float | None = 60.0
    initial_backoff: float = 0.25
    max_backoff: float = 4.0
    multiplier: float = 2.0
    jitter: float = 0.2  # +/- this fraction of each delay, so many clients do not retry in lockstep

    def __post_init__(self) -> None:
        if self.attempts is not None and self.attempts < 1:
            raise ValueError("attempts must be >= 1")
        if self.initial_backoff < 0 or self.max_backoff < self.initial_backoff or self.multiplier < 1:
            raise ValueError("backoff must satisfy 0 <= initial_backoff <= max_backoff and multiplier >= 1")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")

    def retryable(self, error: BaseException) -> bool:
        return isinstance(error, ServerUnavailable)

    def should_retry(self, error: BaseException, attempt: int, elapsed: float) -> bool:
        """``attempt``: tries made so far (1 after the first failure); ``elapsed``: seconds since the first try."""
        if not self.retryable(error):
            return False
        if self.attempts is not None and attempt >= self.attempts:
            return False
        return self.deadline is None or elapsed < self.deadline

    def backoff(self, attempt: int, *, remaining: float | None = None, rng: random.Random | None = None) -> float:
        """Delay before try ``attempt + 1``; capped to ``remaining`` seconds so the last try lands at the deadline."""
        base = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        r = (rng or random).random()
        delay = base * (1 + self.jitter * (2 * r - 1))
        return max(0.0, min(delay, remaining)) if remaining is not None else delay


NO_RETRY = RetryPolicy(attempts=1)


class RequestObserver(Protocol):
    """Hooks the client calls for every attempt; ClientStats and stylize.sdk.metrics.ClientMetrics implement it."""

    def observe_request(self, model: str, seconds: float, error: StylizeError | None) -> None: ...

    def observe_retry(self, model: str, error: StylizeError, delay: float) -> None: ...


@dataclass
class ClientStats:
    """What happened on this client, for summaries: attempts, successes, retries, errors by kind, and outages (from
    the first UNAVAILABLE to the next success of a request sent after it: with requests in flight, one sent before
    the server went away can still succeed after another has failed, and does not end the outage)."""

    requests: int = 0  # attempts, retries included
    ok: int = 0
    retries: int = 0
    retry_wait_seconds: float = 0.0  # backoff summed over requests (concurrent waits add up)
    errors: Counter[str] = field(default_factory=Counter)  # kind -> count, every failed attempt
    outages: int = 0
    outage_seconds: float = 0.0
    _outage_start: float | None = field(default=None, repr=False, compare=False)
    _outage_seen: float = field(default=0.0, repr=False, compare=False)  # when the outage's first failure came back
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def observe_request(self, model: str, seconds: float, error: StylizeError | None) -> None:
        now = time.monotonic()
        with self._lock:
            self.requests += 1
            if error is None:
                self.ok += 1
                if self._outage_start is not None and now - seconds >= self._outage_seen:
                    self.outage_seconds += now - self._outage_start
                    self._outage_start = None
            else:
                self.errors[error.kind] += 1
                if isinstance(error, ServerUnavailable) and self._outage_start is None:
                    self._outage_start, self._outage_seen = now - seconds, now
                    self.outages += 1

    def observe_retry(self, model: str, error: StylizeError, delay: float) -> None:
        with self._lock:
            self.retries += 1
            self.retry_wait_seconds += delay

    def summary(self) -> str:
        with self._lock:
            text = f"{self.ok} requests ok"
            if self.outages:
                ongoing = " (still unavailable)" if self._outage_start is not None else ""
                text += (
                    f"; the server was unavailable {self.outages} time{'s' if self.outages > 1 else ''} for "
                    f"{self.outage_seconds:.1f} s{ongoing}, {self.retries} attempts retried"
                )
            elif self.retries:
                text += f", {self.retries} attempts retried"
            if self.errors:
                text += "; failed attempts: " + ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items()))
            return text


# ---------------------------------------------------------------------------------------------------------------
# Shared request building
# ---------------------------------------------------------------------------------------------------------------


def channel_args(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # gRPC's own reconnect backoff grows to 120 s by default: after a server restart the channel would sit idle
        # long after the server is back. Keep it short; our RetryPolicy paces the calls.
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2000),
    ]


def draining(err: "ModelNotFound", ready: "bool | Callable[[], bool]") -> StylizeError:
    """NOT_FOUND from a server that is not ready is a drain, not a missing model: while tritonserver stops, it
    unloads the models first and answers NOT_FOUND for seconds. Retried like UNAVAILABLE (the next try reaches
    another pod, or the restarted server); from a ready server it stays ModelNotFound."""
    if ready() if callable(ready) else ready:
        return err
    return ServerUnavailable(
        f"{err.message} (the server is not ready: draining or starting)",
        model=err.model,
        status=err.status,
        url=err.url,
    )


class Observers:
    def __init__(self, observers: list[RequestObserver]):
        self._observers = observers

    def request(self, model: str, seconds: float, error: StylizeError | None) -> None:
        for o in self._observers:
            o.observe_request(model, seconds, error)

    def retry(self, model: str, error: StylizeError, delay: float) -> None:
        for o in self._observers:
            o.observe_retry(model, error, delay)


def triton_errors() -> tuple[type[BaseException], ...]:
    import grpc
    from tritonclient.utils import InferenceServerException

    return (InferenceServerException, grpc.RpcError)
