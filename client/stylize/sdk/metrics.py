"""Optional client-side Prometheus metrics for services that embed the SDK.

    >>> from stylize.sdk.metrics import ClientMetrics
    >>> client = StylizeClient(metrics=ClientMetrics())        # registers on prometheus_client's default registry
    >>> prometheus_client.start_http_server(9100)                 # or mount prometheus_client.make_asgi_app()

Series (``namespace`` defaults to ``stylize_client``):

    <ns>_request_seconds{model, outcome}   histogram of every attempt (outcome: ok or the error kind)
    <ns>_errors_total{model, kind}         failed attempts by kind (unavailable, invalid_input, timeout, ...)
    <ns>_retries_total{model}              attempts retried after the server was unavailable

Needs ``pip install 'stylize[metrics]'`` (prometheus-client); the SDK itself never imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from stylize.contract.errors import StylizeError

# Latency buckets from a 64 px style transfer (~20 ms) to a large 4x upscale on CPU (minutes).
DEFAULT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class ClientMetrics:
    """Implements the client's RequestObserver hooks on prometheus-client collectors.

    Give each ClientMetrics its own ``registry`` (prometheus_client.CollectorRegistry) when several live in one
    process: the same series cannot be registered twice in one registry.
    """

    def __init__(
        self,
        *,
        registry: "CollectorRegistry | None" = None,
        namespace: str = "stylize_client",
        buckets: tuple[float, ...] = DEFAULT_BUCKETS,
    ):
        try:
            import prometheus_client
        except ImportError as e:  # optional dependency
            raise ImportError("ClientMetrics needs prometheus-client: pip install 'stylize[metrics]'") from e
        if registry is None:
            registry = prometheus_client.REGISTRY
        self.registry = registry
        self.request_seconds = prometheus_client.Histogram(
            f"{namespace}_request_seconds",
            "Duration of each inference attempt made by the SDK",
            ["model", "outcome"],
            buckets=buckets,
            registry=registry,
        )
        self.errors = prometheus_client.Counter(
            f"{namespace}_errors", "Failed attempts by error kind", ["model", "kind"], registry=registry
        )
        self.retries = prometheus_client.Counter(
            f"{namespace}_retries", "Attempts retried after the server was unavailable", ["model"], registry=registry
        )

    def observe_request(self, model: str, seconds: float, error: "StylizeError | None") -> None:
        self.request_seconds.labels(model=model, outcome="ok" if error is None else error.kind).observe(seconds)
        if error is not None:
            self.errors.labels(model=model, kind=error.kind).inc()

    def observe_retry(self, model: str, error: "StylizeError", delay: float) -> None:
        self.retries.labels(model=model).inc()


__all__ = ["ClientMetrics", "DEFAULT_BUCKETS"]
