"""Temporary credentials kept fresh: a cache in front of a source that issues them.

The rules (the official library's ``RefreshCachedSupplier``, spec ``credentials-chain.md``
§2.3), for a credential that expires at ``E``:

* until ``E - 15 min`` (*stale*) it is served as it is, a time comparison and nothing more;
* a source that *prefetches* (the instance role) refreshes it in the background from its
  prefetch time on (``now + 60 min`` after each fetch, never later than stale), so
  callers keep the current value meanwhile;
* from stale on, one caller refreshes while the others keep the current value; a caller
  finding none left to serve (first use, or expired) waits for that refresh;
* a refresh that fails leaves the last good value in service **until it expires** (``E``),
  retried at most every ``retry_interval`` seconds; from ``E`` on every call raises
  :class:`CredentialsUnavailable`, its cause the last failure.

A credential too short-lived for the margin (``E - 15 min`` already past when it
arrives, as for a 900 s AssumeRole) goes stale half-way to its expiry instead; one
already expired on arrival counts as a failed refresh.
"""

from __future__ import annotations

import asyncio
import math
import threading
from datetime import datetime

import attrs

from aliak.credentials._errors import CredentialsUnavailable
from aliak.credentials._values import Credential, StsCredential
from aliak.errors import AliakError
from aliak.timestamps import Clock, system_clock

__all__ = [
    "DEFAULT_RETRY_INTERVAL",
    "STALE_MARGIN",
    "RefreshingCredentialsProvider",
]

STALE_MARGIN = 15 * 60.0  # the official margin: stale at Expiration - 15 min
DEFAULT_RETRY_INTERVAL = 10.0  # the official minimum back-off after a failed refresh


@attrs.frozen
class _Cached:
    credential: Credential
    check_at: float  # before this, served without a second look (the hot path)
    stale_at: float  # from this on, a refresh is due before serving
    expires_at: float  # from this on, never served


class RefreshingCredentialsProvider:
    """A :class:`~aliak.CredentialsProvider` over a source of temporary credentials.

    Subclasses implement :meth:`fetch` (one call to the source, returning an
    :class:`~aliak.StsCredential` with its ``expiration``, or a permanent credential that
    never needs refreshing) and name the source in :attr:`source`. ``clock`` gives UNIX
    seconds (tests inject one); ``prefetch_after`` turns on background prefetching that
    many seconds after each fetch.

    :meth:`get_credential` is safe from any thread; :meth:`get_credential_async` is the
    same for a coroutine, with any wait for the source moved off the event loop.
    """

    source: str = "a credential source"

    def __init__(
        self,
        *,
        clock: Clock = system_clock,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
        prefetch_after: float | None = None,
    ) -> None:
        self._clock = clock
        self._retry_interval = retry_interval
        self._prefetch_after = prefetch_after
        self._cached: _Cached | None = None
        self._lock = threading.Lock()
        self._last_error: BaseException | None = None

    def fetch(self) -> Credential:
        """One request to the source: a new credential, or an :class:`~aliak.AliakError`."""
        raise NotImplementedError

    # -- the hot path ------------------------------------------------------------

    def get_credential(self) -> Credential:
        cached = self._cached
        if cached is not None and self._clock() < cached.check_at:
            return cached.credential
        return self._refresh_if_needed()

    async def get_credential_async(self) -> Credential:
        cached = self._cached
        if cached is not None and self._clock() < cached.check_at:
            return cached.credential
        return await asyncio.to_thread(self._refresh_if_needed)

    @property
    def last_error(self) -> BaseException | None:
        """Why the last refresh failed, while the value before it is still served."""
        return self._last_error

    # -- refreshing --------------------------------------------------------------

    def _refresh_if_needed(self) -> Credential:
        now = self._clock()
        cached = self._cached
        if cached is not None and now < cached.stale_at:
            self._prefetch(cached, now)
            return cached.credential
        if cached is not None and now < cached.expires_at:
            # Stale, still valid: one caller refreshes, the others keep the current value.
            if not self._lock.acquire(blocking=False):
                return cached.credential
        else:
            self._lock.acquire()  # nothing to serve: wait for whoever is refreshing
        try:
            now = self._clock()
            current = self._cached
            if current is not None and now < current.check_at:
                return current.credential  # refreshed while this caller waited
            return self._fetch_and_store(now)
        finally:
            self._lock.release()

    def refresh_if_due(self) -> None:
        """Refresh now if the prefetch time has come (what the background job runs);
        a failure is kept in :attr:`last_error`, the current value stays in service."""
        with self._lock:  # after any refresh under way: it may be the one that was due
            current = self._cached
            if current is not None and self._clock() < current.check_at:
                return
            try:
                self._fetch_and_store(self._clock())
            except AliakError as error:
                self._last_error = error

    def _prefetch(self, cached: _Cached, now: float) -> None:
        """Start one background refresh; the callers meanwhile take the hot path."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            if self._cached is not cached:
                return
            self._cached = attrs.evolve(
                cached, check_at=min(now + self._retry_interval, cached.stale_at)
            )
        finally:
            self._lock.release()
        threading.Thread(
            target=self._refresh_in_background, name="aliak-credentials-prefetch", daemon=True
        ).start()

    def _refresh_in_background(self) -> None:
        with self._lock:
            try:
                self._fetch_and_store(self._clock())
            except AliakError as error:
                self._last_error = error

    def _fetch_and_store(self, now: float) -> Credential:
        """Under the lock: ask the source once; on failure serve the last good value
        until it expires."""
        try:
            credential = self.fetch()
            cached = self._schedule(credential, now)
        except AliakError as error:
            self._last_error = error
            previous = self._cached
            if previous is not None and now < previous.expires_at:
                self._cached = attrs.evolve(
                    previous,
                    check_at=min(now + self._retry_interval, previous.expires_at),
                )
                return previous.credential
            if previous is None:
                raise
            raise CredentialsUnavailable(
                self.source, detail=f"the last credential expired and its refresh failed: {error}"
            ) from error
        self._cached = cached
        self._last_error = None
        return credential

    def _schedule(self, credential: Credential, now: float) -> _Cached:
        expiration = credential.expiration if isinstance(credential, StsCredential) else None
        if expiration is None:
            return _Cached(credential, math.inf, math.inf, math.inf)
        expires_at = expiration.timestamp()
        if expires_at <= now:
            raise CredentialsUnavailable(
                self.source,
                detail=f"the source returned a credential that expired at "
                f"{_iso(expiration)}; is this machine's clock right?",
            )
        stale_at = expires_at - STALE_MARGIN
        if stale_at <= now:
            stale_at = now + (expires_at - now) / 2
        check_at = stale_at
        if self._prefetch_after is not None:
            check_at = min(now + self._prefetch_after, stale_at)
        return _Cached(credential, check_at, stale_at, expires_at)

    def __repr__(self) -> str:
        cached = self._cached
        held = "none yet" if cached is None else repr(cached.credential.access_key_id)
        return f"{type(self).__name__}(source={self.source!r}, credential={held})"


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
