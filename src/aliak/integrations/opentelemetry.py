"""Verifier metrics as OpenTelemetry metrics (``pip install 'aliak[otel]'``).

:class:`OpenTelemetryMetrics` is an :class:`aliak.VerifierMetrics` hook over the
``opentelemetry-api`` metrics API: it records through whatever ``MeterProvider`` the
application configured (the global one by default), so the SDK, its readers and
exporters are the application's choice::

    verifier = Verifier(store, metrics=OpenTelemetryMetrics())

The instruments (meter ``aliak``)::

    aliak.verify.requests    counter    {result, scheme, code}
    aliak.verify.duration    histogram  seconds, {result, scheme}
    aliak.key_cache.lookups  counter    {result}: hit | miss
    aliak.store.errors       counter    {operation}

Attributes come from small fixed sets only (as :mod:`aliak.integrations.prometheus`):
never a key id, an account id or an address.
"""

from __future__ import annotations

from opentelemetry import metrics
from opentelemetry.metrics import Meter, MeterProvider
from opentelemetry.util.types import Attributes

from aliak import __version__

__all__ = ["OpenTelemetryMetrics"]


class OpenTelemetryMetrics:
    """The hook, with its instruments created on ``meter`` (else on the meter ``aliak``
    of ``meter_provider``, else of the global provider)."""

    def __init__(
        self, meter_provider: MeterProvider | None = None, *, meter: Meter | None = None
    ) -> None:
        if meter is None:
            meter = metrics.get_meter("aliak", __version__, meter_provider=meter_provider)
        self.meter = meter
        self.requests = meter.create_counter(
            "aliak.verify.requests",
            unit="{request}",
            description="Requests verified, by result, signature scheme and refusal code.",
        )
        self.duration = meter.create_histogram(
            "aliak.verify.duration",
            unit="s",
            description="Time from the start of a verify to its outcome.",
        )
        self.key_cache_lookups = meter.create_counter(
            "aliak.key_cache.lookups",
            unit="{lookup}",
            description="Key-cache look-ups by the verifier: hit or miss (a miss reads the store).",
        )
        self.store_errors = meter.create_counter(
            "aliak.store.errors",
            unit="{error}",
            description="Store calls by the verifier that raised, by operation.",
        )
        self._hit: Attributes = {"result": "hit"}
        self._miss: Attributes = {"result": "miss"}
        # The attribute sets of accepted requests, one per scheme, built once.
        self._accepted: dict[str, tuple[Attributes, Attributes]] = {}

    def accepted(self, scheme: str, seconds: float) -> None:
        attributes = self._accepted.get(scheme)
        if attributes is None:
            attributes = (
                {"result": "accepted", "scheme": scheme, "code": ""},
                {"result": "accepted", "scheme": scheme},
            )
            self._accepted[scheme] = attributes
        counted, timed = attributes
        self.requests.add(1, counted)
        self.duration.record(seconds, timed)

    def refused(self, code: str, scheme: str, seconds: float) -> None:
        self.requests.add(1, {"result": "refused", "scheme": scheme, "code": code})
        self.duration.record(seconds, {"result": "refused", "scheme": scheme})

    def key_cache(self, hit: bool) -> None:
        self.key_cache_lookups.add(1, self._hit if hit else self._miss)

    def store_error(self, operation: str) -> None:
        self.store_errors.add(1, {"operation": operation})
