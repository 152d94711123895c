"""Verifier metrics as Prometheus metrics (``pip install 'aliak[prometheus]'``).

:class:`PrometheusMetrics` is an :class:`aliak.VerifierMetrics` hook over
``prometheus_client``::

    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    verifier = Verifier(store, metrics=PrometheusMetrics(registry))
    ...
    generate_latest(registry)  # the text exposition format, for a /metrics endpoint

The metrics (``namespace`` is ``aliak`` by default)::

    aliak_verify_requests_total{result, scheme, code}   counter
    aliak_verify_duration_seconds{result, scheme}       histogram
    aliak_key_cache_lookups_total{result}               counter: hit | miss
    aliak_store_errors_total{operation}                 counter

Every label comes from a small fixed set -- ``result`` is ``accepted`` or ``refused``,
``scheme`` one of ``ACS3``/``RPC``/``ROA``/``none``, ``code`` an aliak error code (empty for
an accepted request), ``operation`` a store call -- and never a key id, an account id or
an address, so the number of series stays bounded whatever clients send.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

__all__ = ["DEFAULT_BUCKETS", "PrometheusMetrics"]

# A warm verify takes tens of microseconds; a cold one a store round trip (ms).
DEFAULT_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)


class PrometheusMetrics:
    """The hook, registering its four metrics in ``registry`` (the process-wide default
    registry when ``None``). One instance per registry: a second one would register the
    same names again, which ``prometheus_client`` refuses."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        namespace: str = "aliak",
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        registry = REGISTRY if registry is None else registry
        self.registry = registry
        self.requests = Counter(
            "verify_requests",
            "Requests verified, by result, signature scheme and refusal code.",
            ["result", "scheme", "code"],
            namespace=namespace,
            registry=registry,
        )
        self.duration = Histogram(
            "verify_duration_seconds",
            "Time from the start of a verify to its outcome.",
            ["result", "scheme"],
            namespace=namespace,
            registry=registry,
            buckets=tuple(buckets),
        )
        self.key_cache_lookups = Counter(
            "key_cache_lookups",
            "Key-cache look-ups by the verifier: hit or miss (a miss reads the store).",
            ["result"],
            namespace=namespace,
            registry=registry,
        )
        self.store_errors = Counter(
            "store_errors",
            "Store calls by the verifier that raised, by operation.",
            ["operation"],
            namespace=namespace,
            registry=registry,
        )
        # The children of the hot labels, resolved once (labels() costs a lock and a dict).
        self._hits = self.key_cache_lookups.labels("hit")
        self._misses = self.key_cache_lookups.labels("miss")
        self._accepted: dict[str, tuple[Counter, Histogram]] = {}

    def accepted(self, scheme: str, seconds: float) -> None:
        children = self._accepted.get(scheme)
        if children is None:
            children = (
                self.requests.labels("accepted", scheme, ""),
                self.duration.labels("accepted", scheme),
            )
            self._accepted[scheme] = children
        count, duration = children
        count.inc()
        duration.observe(seconds)

    def refused(self, code: str, scheme: str, seconds: float) -> None:
        self.requests.labels("refused", scheme, code).inc()
        self.duration.labels("refused", scheme).observe(seconds)

    def key_cache(self, hit: bool) -> None:
        (self._hits if hit else self._misses).inc()

    def store_error(self, operation: str) -> None:
        self.store_errors.labels(operation).inc()
