"""The in-process half of every store's invalidation channel.

A store announces each change it commits to the verifiers built on it, so that they
answer with the new state on their very next request (read-your-writes), whatever the
``freshness`` of their caches. :class:`LocalInvalidation` is that announcement inside one
process: :meth:`~LocalInvalidation.deliver` calls every subscriber at once, in the
thread that made the change, before the store's method returns.

How a change made by *another* process arrives is each backend's own business, and is
wired in by handing this class two functions: ``announce`` (tell the other processes:
a change-log row, a ``NOTIFY``) and ``look`` (the cheap change check a verifier runs
before every request). Both must swallow their own failures: the store is the truth, and
a lost announcement costs at most one freshness period.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from aliak.storage.protocols import InvalidationChannel

__all__ = ["MAX_IDS_PER_CHANGE", "CombinedInvalidation", "LocalInvalidation", "subjects"]

_log = logging.getLogger("aliak")

Callback = Callable[[str | None], None]

# A change of more keys than this at once is announced as "anything changed".
MAX_IDS_PER_CHANGE: Final = 16


def subjects(access_key_ids: Iterable[str | None]) -> list[str | None]:
    """What to announce for a change of these ids: each id once, in order, or ``[None]``
    (everything) when there are many or one of them is ``None``."""
    wanted: list[str | None] = []
    for access_key_id in access_key_ids:
        if access_key_id is None:
            return [None]
        if access_key_id not in wanted:
            wanted.append(access_key_id)
    return [None] if len(wanted) > MAX_IDS_PER_CHANGE else wanted


class LocalInvalidation:
    """Implements :class:`~aliak.storage.protocols.InvalidationChannel` for one process.

    :meth:`deliver` (what the store calls after a commit) calls every subscriber in the
    calling thread; a subscriber that raises is logged and the others still hear.
    :meth:`publish` delivers too, and also runs ``announce`` (the backend's way to tell
    other processes). :meth:`refresh` runs ``look``; it never raises.
    """

    def __init__(
        self,
        *,
        announce: Callable[[Sequence[str | None]], None] | None = None,
        look: Callable[[], None] | None = None,
        on_subscribe: Callable[[], None] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._callbacks: dict[object, Callback] = {}
        self._snapshot: tuple[Callback, ...] = ()
        self._announce = announce
        self._look = look
        self._on_subscribe = on_subscribe

    def __repr__(self) -> str:
        return f"{type(self).__name__}(subscribers={len(self._snapshot)})"

    @property
    def subscribers(self) -> int:
        return len(self._snapshot)

    def publish(self, access_key_id: str | None) -> None:
        """Announce a change of ``access_key_id`` (``None``: anything) here and, where
        the backend can, to other processes. Never raises."""
        if self._announce is not None:
            try:
                self._announce([access_key_id])
            except Exception as error:  # the backend's announce should not; be sure
                _log.warning(
                    "aliak: could not announce a key change to other processes (%s); "
                    "they will see it within their freshness",
                    type(error).__name__,
                )
        self.deliver([access_key_id])

    def subscribe(self, callback: Callback) -> Callable[[], None]:
        """Call ``callback`` for every change delivered from now on; returns a function
        that unsubscribes (idempotent)."""
        token = object()
        with self._lock:
            self._callbacks[token] = callback
            self._snapshot = tuple(self._callbacks.values())
        if self._on_subscribe is not None:
            self._on_subscribe()

        def unsubscribe() -> None:
            with self._lock:
                self._callbacks.pop(token, None)
                self._snapshot = tuple(self._callbacks.values())

        return unsubscribe

    def refresh(self) -> None:
        """Run the backend's change check, if it has one (it delivers what it finds)."""
        look = self._look
        if look is not None:
            try:
                look()
            except Exception:  # never fail a request over a change check
                _log.debug("aliak: the change check failed", exc_info=True)

    def deliver(self, access_key_ids: Iterable[str | None]) -> None:
        """Call every subscriber with each of :func:`subjects` of ``access_key_ids``."""
        callbacks = self._snapshot
        if not callbacks:
            return
        for access_key_id in subjects(access_key_ids):
            for callback in callbacks:
                try:
                    callback(access_key_id)
                except Exception:  # one failing subscriber must not starve the others
                    _log.exception("aliak: an invalidation callback failed")


class CombinedInvalidation:
    """Implements :class:`~aliak.storage.protocols.InvalidationChannel` over several:
    a subscriber hears every one of them, :meth:`publish` and :meth:`refresh` go to
    each. A composite store follows its base store's own channel (in-process delivery,
    the engine's change check) and the fleet's (Redis) this way."""

    def __init__(self, *channels: InvalidationChannel) -> None:
        self.channels = channels

    def __repr__(self) -> str:
        return f"CombinedInvalidation({', '.join(map(repr, self.channels))})"

    def publish(self, access_key_id: str | None) -> None:
        for channel in self.channels:
            try:
                channel.publish(access_key_id)
            except Exception as error:  # one channel's failure must not hide the others
                _log.warning(
                    "aliak: could not announce a key change on %s (%s); verifiers will "
                    "see it within their freshness",
                    type(channel).__name__,
                    type(error).__name__,
                )

    def subscribe(self, callback: Callback) -> Callable[[], None]:
        unsubscribes = [channel.subscribe(callback) for channel in self.channels]

        def unsubscribe() -> None:
            for each in unsubscribes:
                each()

        return unsubscribe

    def refresh(self) -> None:
        for channel in self.channels:
            try:
                channel.refresh()
            except Exception:  # never fail a request over a change check
                _log.debug("aliak: a change check failed", exc_info=True)
