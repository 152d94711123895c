"""The metrics hook a verifier calls: accepted, refused by code, verify latency, key-cache
hits and misses, store errors.

A verifier built without ``metrics=`` calls nothing and measures nothing (one ``is None``
check per request). With one, it calls the hook once per outcome and once per key-cache
look-up, always with labels from the small fixed sets below -- never a key id, an account
id, an address or any other value a caller chooses -- so a hook may turn each argument
into a metric label as it is. :mod:`aliak.integrations.prometheus` and
:mod:`aliak.integrations.opentelemetry` are two such hooks.

A hook is called on the request's thread (the event loop's, for
:class:`~aliak.AsyncVerifier`) -- but for ``store_error("record_usage")``, which comes from
the thread that writes last-use records -- so it must be quick, must not block, and must
be thread-safe; an exception out of it is logged and swallowed, never the request's
outcome.
"""

from __future__ import annotations

from typing import Final, Protocol, runtime_checkable

from aliak import errors

__all__ = [
    "OTHER_CODE",
    "REFUSAL_CODES",
    "SCHEME_LABELS",
    "STORE_OPERATIONS",
    "NoMetrics",
    "VerifierMetrics",
]

# The signature schemes, and "none" for a request refused before its scheme was known.
SCHEME_LABELS: Final = ("ACS3", "RPC", "ROA", "none")
# What a store error is counted under: the store call that raised.
STORE_OPERATIONS: Final = (
    "get_key",
    "reload_keyring",
    "get_network_policy",
    "claim_nonce",
    "record_usage",
)
# Every code an aliak error carries; a refusal whose code is none of them (a custom
# store's own error class) is counted as OTHER_CODE.
REFUSAL_CODES: Final = frozenset(
    error.code
    for error in (getattr(errors, name) for name in errors.__all__)
    if isinstance(error, type) and issubclass(error, errors.AliakError)
)
OTHER_CODE: Final = "Other"


@runtime_checkable
class VerifierMetrics(Protocol):
    """What a verifier reports. Times are seconds (``time.perf_counter``), from the start
    of ``verify`` (or ``precheck``) to its outcome."""

    def accepted(self, scheme: str, seconds: float) -> None:
        """A request passed every check; ``scheme`` is ``ACS3``, ``RPC`` or ``ROA``."""
        ...

    def refused(self, code: str, scheme: str, seconds: float) -> None:
        """A request was refused with ``code`` (under the opaque profile, the precise
        reason's code, not ``AccessDenied``); ``scheme`` is ``none`` when the request
        was refused before its scheme was recognised."""
        ...

    def key_cache(self, hit: bool) -> None:
        """The key cache was consulted for a request: ``hit`` when the entry was fresh."""
        ...

    def store_error(self, operation: str) -> None:
        """A store call raised (one of :data:`STORE_OPERATIONS`); the request, if any,
        was refused with ``InternalError`` or the store's own refusal."""
        ...


class NoMetrics:
    """A hook that records nothing: subclass it to implement only some methods. A
    verifier given a plain ``NoMetrics()`` treats it as no hook at all."""

    __slots__ = ()

    def accepted(self, scheme: str, seconds: float) -> None:
        pass

    def refused(self, code: str, scheme: str, seconds: float) -> None:
        pass

    def key_cache(self, hit: bool) -> None:
        pass

    def store_error(self, operation: str) -> None:
        pass
