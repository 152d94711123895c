"""Redis for what a fleet of verifiers shares: the replay guard and the invalidation channel.

- :class:`RedisNonceStore` implements :class:`~aliak.storage.protocols.NonceStore`: each
  claim is one atomic ``SET <key> <expires_at> NX PX <ttl> GET``, one round trip and no
  script (spec ``verification.md`` §5). Redis drops a claim when its TTL runs out, so
  nothing needs pruning. :meth:`RedisNonceStore.as_async` gives the same store over
  ``redis.asyncio``.
- :class:`RedisInvalidation` implements
  :class:`~aliak.storage.protocols.InvalidationChannel` over Redis pub/sub: a key change
  made by one process reaches every verifier at once instead of after their freshness.

Both fail closed: a Redis that cannot be reached, is restarting, loading its data set or
read-only raises :class:`~aliak.errors.ServiceUnavailable` (503), and no claim is ever
taken as granted. The client reconnects by itself when the server is back.

Retention: a claim lives in Redis only. A Redis that restarts without persistence (no
AOF/RDB) forgets the claims of the last window; run it with ``appendonly yes`` if a
replay across such a restart matters to you.

Compose with a key store: ``CompositeStore(SQLiteStore(path), nonces=RedisNonceStore(url),
invalidations=RedisInvalidation(url))`` (:mod:`aliak.storage.composite`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import threading
import weakref
from collections.abc import AsyncGenerator, Callable
from typing import Any, Final, NoReturn

import attrs

try:
    import redis
    import redis.asyncio
    import redis.asyncio.retry
    from redis.backoff import NoBackoff
    from redis.exceptions import (
        BusyLoadingError,
        ClusterDownError,
        OutOfMemoryError,
        ReadOnlyError,
        RedisError,
        ResponseError,
        TryAgainError,
    )
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from redis.retry import Retry
except ImportError as missing:  # pragma: no cover - depends on the environment
    raise ImportError(
        "aliak.storage.redis needs the redis package: pip install 'aliak[redis]'"
    ) from missing

from aliak.errors import AliakError, InternalError, InvalidParameter, ServiceUnavailable

__all__ = ["AsyncRedisNonceStore", "RedisInvalidation", "RedisNonceStore"]

_log = logging.getLogger("aliak")

DEFAULT_PREFIX: Final = "aliak:nonce:"
DEFAULT_CHANNEL: Final = "aliak:invalidate"
EVERYTHING: Final = "*"  # the message that stands for "anything may have changed"

# A claim is the add-if-absent of §5 as one command, SET NX (atomic on the server), with
# GET (Redis >= 7.0) so the same reply says what is held when the key exists. The value
# is the claim's expiry on the caller's clock; the TTL is relative (PX, not EXAT/PXAT),
# so the server's clock never decides when a claim ends, only how long it is kept.
#
# The script below is what a claim needs only when SET NX finds a claim whose expiry the
# caller says has passed (``expires_at <= now``) while its TTL, which only ever runs
# longer, has not run out (a stepped or injected clock): the protocol frees it, and taking
# it over must be one atomic check-and-set, which a script is (it runs alone on the
# server). It is also the whole claim on a server too old for SET NX GET.
#   KEYS[1] the claim; ARGV[1] expires_at; ARGV[2] TTL in ms; ARGV[3] now.
_CLAIM: Final = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    return 1
end
local held = tonumber(redis.call('GET', KEYS[1]))
if held ~= nil and held <= tonumber(ARGV[3]) then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return 1
end
return 0
"""

# Deletes, among KEYS, the claims expired at ARGV[1] (a live one is never touched: the
# value is read again inside the script, so a concurrent re-claim is safe).
_PRUNE: Final = """
local removed = 0
for _, key in ipairs(KEYS) do
    local held = tonumber(redis.call('GET', key))
    if held ~= nil and held <= tonumber(ARGV[1]) then
        redis.call('DEL', key)
        removed = removed + 1
    end
end
return removed
"""
_PRUNE_BATCH: Final = 500

# The server is there but cannot serve now; retrying later helps.
_UNAVAILABLE: Final = (
    RedisConnectionError,  # refused, reset, AUTH failed, LOADING (BusyLoadingError)
    RedisTimeoutError,
    BusyLoadingError,
    ReadOnlyError,  # a replica, or a primary demoted during a failover
    OutOfMemoryError,
    TryAgainError,
    ClusterDownError,  # also MASTERDOWN
    OSError,
)


def describe_url(url: str) -> str:
    """``url`` fit for messages and logs: credentials and query string (which may carry
    ``password=``) replaced, even when the URL is malformed."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return "<not a URL>"
    # Everything before the last '@' is credentials, even when a password holds an
    # unescaped '@', '/' or '#'.
    credentials, at, location = rest.rpartition("@")
    location = location.split("?", 1)[0].split("#", 1)[0]
    return f"{scheme}://{'***@' if at or credentials else ''}{location}"


def _password_of(client: Any) -> str | None:
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
    password = kwargs.get("password")
    return password if isinstance(password, str) and password else None


def _scrubbed(text: str, password: str | None) -> str:
    return text.replace(password, "***") if password else text


def _failure(error: Exception, where: str, password: str | None) -> AliakError:
    """The aliak error for a Redis failure: ServiceUnavailable when retrying later can
    help, InternalError when it cannot (a key of the wrong type, a missing permission)."""
    kind = ServiceUnavailable if isinstance(error, _UNAVAILABLE) else InternalError
    reason = _scrubbed(str(error), password)
    return kind(detail=f"Redis at {where}: {type(error).__name__}: {reason}")


def _raise_failure(error: Exception, where: str, password: str | None) -> NoReturn:
    raise _failure(error, where, password) from error


def _retry_policy() -> dict[str, Any]:
    # One immediate retry, on a connection error only: it replaces a pooled connection
    # that died (a server restart) without the caller noticing. Never on a timeout: the
    # claim may have run, and running it again would refuse the caller's own request.
    return {"retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))}


def _async_retry_policy() -> dict[str, Any]:
    return {
        "retry": redis.asyncio.retry.Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
    }


def _check_timeout(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise InvalidParameter(name, detail="seconds, a number > 0")
    return float(value)


def _open_client(url: str, options: dict[str, Any]) -> redis.Redis:
    """A sync client for ``url``, checked with a PING. Never echoes the password."""
    if not isinstance(url, str):
        raise InvalidParameter("url", detail="a Redis URL (redis://, rediss:// or unix://)")
    where = describe_url(url)
    try:
        client = redis.Redis.from_url(url, **options, **_retry_policy())
    except (ValueError, TypeError):
        # The parser's message may quote a fragment of a malformed password: not chained.
        raise InvalidParameter(
            "url",
            detail=f"{where} is not a Redis URL "
            "(redis://[[user]:password@]host[:port][/db], rediss://..., unix://...)",
        ) from None
    try:
        client.ping()
    except RedisError as error:
        password = _password_of(client)
        client.close()
        raise _failure(error, where, password) from error
    return client


def _key_encoder(prefix: str) -> Callable[[str, str], bytes]:
    """``prefix + <byte length of id>:<id>:<nonce>``: the length makes the encoding
    injective, so an id holding ':' never collides with another (id, nonce) pair.
    ``surrogatepass`` encodes any str, so odd header bytes cannot break a claim."""
    head = prefix.encode("utf-8", "surrogatepass")

    def key(access_key_id: str, nonce: str) -> bytes:
        key_id = access_key_id.encode("utf-8", "surrogatepass")
        return b"%s%d:%s:%s" % (head, len(key_id), key_id, nonce.encode("utf-8", "surrogatepass"))

    return key


def _claim_arguments(now: float, expires_at: float) -> list[str]:
    """What a claim sends: its SET's value and TTL, and the script's ARGV. TTL:
    ``expires_at - now`` in ms, rounded up (a claim must never be forgotten before
    ``expires_at``), and at least 1 (PX refuses 0)."""
    if not (math.isfinite(now) and math.isfinite(expires_at)):
        raise InvalidParameter("expires_at", detail="now and expires_at must be finite")
    ttl_ms = max(1, math.ceil((expires_at - now) * 1000))
    return [repr(float(expires_at)), str(ttl_ms), repr(float(now))]


def _claim_command(key: bytes, arguments: list[str]) -> tuple[bytes | str, ...]:
    """The one command of a claim: SET NX PX, answering (GET) what is held if anything."""
    return ("SET", key, arguments[0], "NX", "PX", arguments[1], "GET")


def _claimed_by_set(held: object, now: float) -> bool | None:
    """What the reply of :func:`_claim_command` decides: True (nothing was held, so this
    call claimed it), False (a live claim is held), or None (the claim held has expired
    on the caller's clock: only the script may take it over)."""
    if held is None:
        return True
    try:
        expires_at = float(held)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False  # not a claim this store wrote; the script refuses it too
    return False if expires_at > now else None


def _lacks_set_get(error: ResponseError) -> bool:
    """Whether the server refused SET NX GET as a syntax it does not know (< 7.0)."""
    return "syntax error" in str(error).lower()


class _Claim:
    """A claim, called as a registered script is (``claim(keys=[key], args=ARGV)``,
    1 if claimed): the one SET NX GET, then the script only when that finds a claim
    expired on the caller's clock, or for good once the server refuses SET NX GET."""

    def __init__(self, client: redis.Redis, script: Any) -> None:
        self._client = client
        self._script = script
        self._set_get = True

    def __call__(self, *, keys: list[bytes], args: list[str]) -> int:
        if self._set_get:
            try:
                held = self._client.execute_command(  # type: ignore[no-untyped-call]
                    *_claim_command(keys[0], args), get=True
                )
            except ResponseError as error:
                if not _lacks_set_get(error):
                    raise
                self._set_get = False
            else:
                decided = _claimed_by_set(held, float(args[2]))
                if decided is not None:
                    return int(decided)
        return int(self._script(keys=keys, args=args))


class _AsyncClaim:
    """:class:`_Claim` over ``redis.asyncio``."""

    def __init__(self, client: redis.asyncio.Redis, script: Any) -> None:
        self._client = client
        self._script = script
        self._set_get = True

    async def __call__(self, *, keys: list[bytes], args: list[str]) -> int:
        if self._set_get:
            try:
                command = _claim_command(keys[0], args)
                held = await self._client.execute_command(  # type: ignore[no-untyped-call]
                    *command, get=True
                )
            except ResponseError as error:
                if not _lacks_set_get(error):
                    raise
                self._set_get = False
            else:
                decided = _claimed_by_set(held, float(args[2]))
                if decided is not None:
                    return int(decided)
        return int(await self._script(keys=keys, args=args))


def _match_pattern(prefix: str) -> bytes:
    """A SCAN pattern for every key under ``prefix`` (glob characters escaped)."""
    escaped = bytearray()
    for byte in prefix.encode("utf-8", "surrogatepass"):
        if byte in b"*?[]\\":
            escaped += b"\\"
        escaped.append(byte)
    return bytes(escaped) + b"*"


class RedisNonceStore:
    """Implements :class:`~aliak.storage.protocols.NonceStore` in Redis, for a fleet.

    ``url``: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS) or
    ``unix://``. ``prefix``: prepended to every key (use one per deployment sharing a
    Redis). ``socket_timeout``: seconds to connect or wait for a reply before failing
    closed. ``health_check_interval``: a connection idle that long is PINGed before
    use, so a dead one is replaced instead of failing a request.

    Construction PINGs the server: a malformed URL raises
    :class:`~aliak.errors.InvalidParameter`, an unreachable server
    :class:`~aliak.errors.ServiceUnavailable` (neither message holds the password).
    Thread-safe (a connection pool), and fork-safe (a child opens its own connections).
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        socket_timeout: float = 2.0,
        health_check_interval: float = 10.0,
    ) -> None:
        if not isinstance(prefix, str):
            raise InvalidParameter("prefix", detail="a string")
        timeout = _check_timeout("socket_timeout", socket_timeout)
        interval = _check_timeout("health_check_interval", health_check_interval)
        self._url = url
        self._where = describe_url(url) if isinstance(url, str) else "<not a URL>"
        self._prefix = prefix
        self._options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "health_check_interval": interval,
            "socket_keepalive": True,
        }
        self._redis = _open_client(url, self._options)
        self._password = _password_of(self._redis)
        self._claim_script = _Claim(self._redis, self._redis.register_script(_CLAIM))
        self._prune_script = self._redis.register_script(_PRUNE)
        self._key = _key_encoder(prefix)

    def __repr__(self) -> str:
        return f"RedisNonceStore({self._where!r}, prefix={self._prefix!r})"

    @property
    def prefix(self) -> str:
        return self._prefix

    def key(self, access_key_id: str, nonce: str) -> bytes:
        """The Redis key that holds the claim of ``(access_key_id, nonce)``."""
        return self._key(access_key_id, nonce)

    def claim_nonce(self, access_key_id: str, nonce: str, *, now: float, expires_at: float) -> bool:
        """Claim atomically (one command, one round trip); True if this call claimed it.

        Raises :class:`~aliak.errors.ServiceUnavailable` when Redis cannot answer: a
        claim is never assumed.
        """
        arguments = _claim_arguments(now, expires_at)
        try:
            claimed = self._claim_script(keys=[self._key(access_key_id, nonce)], args=arguments)
        except (RedisError, OSError) as error:  # an OSError redis-py let through, too
            _raise_failure(error, self._where, self._password)
        return bool(claimed == 1)

    def prune_nonces(self, now: float) -> int:
        """Delete claims expired at ``now`` (on the caller's clock); return how many.

        You never need to call this: Redis deletes each claim when its TTL runs out. It
        only finds claims a caller's clock says have expired before their TTL ran out (an
        injected or stepped clock), and walks every key under the prefix with ``SCAN``.
        """
        removed = 0
        batch: list[bytes] = []
        try:
            for key in self._redis.scan_iter(match=_match_pattern(self._prefix), count=1000):
                batch.append(key)
                if len(batch) == _PRUNE_BATCH:
                    removed += int(self._prune_script(keys=batch, args=[repr(float(now))]))
                    batch = []
            if batch:
                removed += int(self._prune_script(keys=batch, args=[repr(float(now))]))
        except (RedisError, OSError) as error:  # an OSError redis-py let through, too
            _raise_failure(error, self._where, self._password)
        return removed

    def as_async(self) -> AsyncRedisNonceStore:
        """The same store over ``redis.asyncio`` (its own connections, same keys)."""
        return AsyncRedisNonceStore(self._url, prefix=self._prefix, options=self._options)

    def close(self) -> None:
        """Close the connections. Idempotent."""
        self._redis.close()


@attrs.frozen
class _LoopClient:
    """What one event loop uses: its client, its claim and prune script, and the keeper
    that closes the client when the loop shuts down."""

    client: redis.asyncio.Redis
    claim: Any
    prune: Any
    keeper: AsyncGenerator[None, None]


async def _aclose_client(client: redis.asyncio.Redis) -> None:
    closer = getattr(client, "aclose", None) or client.close  # aclose: redis >= 5.0.1
    with contextlib.suppress(Exception):  # closing a dead connection may fail
        await closer()


class AsyncRedisNonceStore:
    """Implements :class:`~aliak.storage.protocols.AsyncNonceStore`; made by
    :meth:`RedisNonceStore.as_async`. Same keys, commands and failures as the sync store.

    ``redis.asyncio`` connections belong to the event loop that opened them, so each
    running loop gets its own client, opened on first use and closed when that loop
    shuts down its async generators (``asyncio.run`` does, as it ends) or at
    :meth:`aclose`: no connection outlives its loop.
    """

    def __init__(self, url: str, *, prefix: str, options: dict[str, Any]) -> None:
        self._url = url
        self._where = describe_url(url)
        self._prefix = prefix
        self._options = dict(options)
        self._key = _key_encoder(prefix)
        self._password: str | None = None
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClient] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"AsyncRedisNonceStore({self._where!r}, prefix={self._prefix!r})"

    async def _client(self) -> _LoopClient:
        loop = asyncio.get_running_loop()
        with self._lock:
            opened = self._loops.get(loop)
            if opened is not None:
                return opened
            try:
                client = redis.asyncio.Redis.from_url(
                    self._url, **self._options, **_async_retry_policy()
                )
            except (ValueError, TypeError):
                raise InvalidParameter("url", detail=f"{self._where} is not a Redis URL") from None
            self._password = _password_of(client)
            opened = _LoopClient(
                client,
                _AsyncClaim(client, client.register_script(_CLAIM)),
                client.register_script(_PRUNE),
                self._keep_until_the_loop_ends(loop, client),
            )
            self._loops[loop] = opened
        await opened.keeper.__anext__()  # now the loop knows it, and closes it at its end
        return opened

    async def _keep_until_the_loop_ends(
        self, loop: asyncio.AbstractEventLoop, client: redis.asyncio.Redis
    ) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            with self._lock:
                if (opened := self._loops.get(loop)) is not None and opened.client is client:
                    del self._loops[loop]
            await _aclose_client(client)

    async def claim_nonce(
        self, access_key_id: str, nonce: str, *, now: float, expires_at: float
    ) -> bool:
        arguments = _claim_arguments(now, expires_at)
        opened = await self._client()
        try:
            claimed = await opened.claim(keys=[self._key(access_key_id, nonce)], args=arguments)
        except (RedisError, OSError) as error:  # an OSError redis-py let through, too
            _raise_failure(error, self._where, self._password)
        return bool(claimed == 1)

    async def prune_nonces(self, now: float) -> int:
        """As :meth:`RedisNonceStore.prune_nonces`: never needed, Redis expires claims."""
        opened = await self._client()
        removed = 0
        batch: list[bytes] = []
        pattern = _match_pattern(self._prefix)
        try:
            async for key in opened.client.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) == _PRUNE_BATCH:
                    removed += int(await opened.prune(keys=batch, args=[repr(float(now))]))
                    batch = []
            if batch:
                removed += int(await opened.prune(keys=batch, args=[repr(float(now))]))
        except (RedisError, OSError) as error:  # an OSError redis-py let through, too
            _raise_failure(error, self._where, self._password)
        return removed

    async def aclose(self) -> None:
        """Close the running loop's connections now (other loops' close as they end)."""
        with self._lock:
            opened = self._loops.pop(asyncio.get_running_loop(), None)
        if opened is not None:
            await opened.keeper.aclose()


Callback = Callable[[str | None], None]


class RedisInvalidation:
    """Implements :class:`~aliak.storage.protocols.InvalidationChannel` over Redis pub/sub.

    :meth:`publish` sends the key id (``"*"`` for anything) on ``channel``; it never
    raises for a Redis failure, which it logs at WARNING on the ``aliak`` logger: the
    store is the truth, and a lost message costs at most one freshness period.

    :meth:`subscribe` starts one daemon thread per object, shared by every callback. It
    reconnects with exponential backoff (``min_backoff`` doubling up to
    ``max_backoff`` seconds) when Redis goes away, and every time its subscription is
    (re)established it calls every callback with ``None``, since messages may have been
    missed meanwhile (including between :meth:`subscribe` and the first subscription).
    :meth:`close` stops the thread.

    Construction PINGs the server, with the same errors as :class:`RedisNonceStore`.
    """

    def __init__(
        self,
        url: str,
        *,
        channel: str = DEFAULT_CHANNEL,
        socket_timeout: float = 2.0,
        health_check_interval: float = 10.0,
        min_backoff: float = 0.05,
        max_backoff: float = 2.0,
    ) -> None:
        if not isinstance(channel, str) or not channel:
            raise InvalidParameter("channel", detail="a non-empty channel name")
        timeout = _check_timeout("socket_timeout", socket_timeout)
        interval = _check_timeout("health_check_interval", health_check_interval)
        self._min_backoff = _check_timeout("min_backoff", min_backoff)
        self._max_backoff = max(self._min_backoff, _check_timeout("max_backoff", max_backoff))
        self._where = describe_url(url) if isinstance(url, str) else "<not a URL>"
        self._channel = channel
        self._redis = _open_client(
            url,
            {
                "socket_timeout": timeout,
                "socket_connect_timeout": timeout,
                "health_check_interval": interval,
                "socket_keepalive": True,
            },
        )
        self._password = _password_of(self._redis)
        self._lock = threading.Lock()
        self._callbacks: dict[object, Callback] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._closed = False
        self._pid = os.getpid()
        self.subscriptions = 0  # times the listener (re)subscribed; for tests and metrics

    def __repr__(self) -> str:
        return f"RedisInvalidation({self._where!r}, channel={self._channel!r})"

    @property
    def channel(self) -> str:
        return self._channel

    def publish(self, access_key_id: str | None) -> None:
        """Announce a change of ``access_key_id`` (``None``: of anything). Best effort."""
        message = EVERYTHING if access_key_id is None else access_key_id
        try:
            self._redis.publish(self._channel, message)
        except (RedisError, OSError) as error:
            _log.warning(
                "aliak: could not publish a key invalidation on Redis at %s (%s); "
                "verifiers will see the change within their freshness",
                self._where,
                _scrubbed(f"{type(error).__name__}: {error}", self._password),
            )

    def subscribe(self, callback: Callback) -> Callable[[], None]:
        """Call ``callback`` (from the listener thread) for every announcement; returns a
        function that unsubscribes (idempotent)."""
        token = object()
        with self._lock:
            if self._closed:
                raise InternalError(detail=f"{self!r} is closed")
            if self._pid != os.getpid():  # a forked child: the parent's thread is not here
                self._pid = os.getpid()
                self._callbacks = {}
                self._thread = None
            self._callbacks[token] = callback
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._listen, name="aliak-redis-invalidation", daemon=True
                )
                self._thread.start()

        def unsubscribe() -> None:
            with self._lock:
                self._callbacks.pop(token, None)

        return unsubscribe

    def refresh(self) -> None:
        """Nothing to look at: Redis pushes every announcement to the listener thread."""

    def close(self) -> None:
        """Stop the listener thread and close the connections. Idempotent."""
        with self._lock:
            self._closed = True
            self._callbacks = {}
            thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        self._redis.close()

    # -- the listener thread ---------------------------------------------------------

    def _notify(self, access_key_id: str | None) -> None:
        with self._lock:
            callbacks = list(self._callbacks.values())
        for callback in callbacks:
            try:
                callback(access_key_id)
            except Exception:  # one failing subscriber must not starve the others
                _log.exception("aliak: an invalidation callback failed")

    def _listen(self) -> None:
        delay = self._min_backoff
        outage = False
        # Through a ``Callable[[], Any]``: only recent redis-py releases type ``pubsub()``, and
        # the call must type-check (without an ignore that goes stale) on either side.
        new_pubsub: Callable[[], Any] = self._redis.pubsub
        while not self._stop.is_set():
            pubsub = new_pubsub()
            try:
                pubsub.subscribe(self._channel)
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.2)
                    if message is None:
                        continue
                    kind = message.get("type")
                    if kind == "subscribe":
                        # (Re)subscribed, by this loop or by the client's own reconnect:
                        # what was published meanwhile is lost, so drop everything.
                        self.subscriptions += 1
                        if outage:
                            _log.info(
                                "aliak: invalidation channel on Redis at %s is back",
                                self._where,
                            )
                        outage = False
                        delay = self._min_backoff
                        self._notify(None)
                    elif kind == "message":
                        data = message.get("data")
                        text = (
                            data.decode("utf-8", "surrogateescape")
                            if isinstance(data, bytes)
                            else str(data)
                        )
                        self._notify(None if text == EVERYTHING else text)
            except Exception as error:  # the thread must outlive any failure
                if not outage:
                    _log.warning(
                        "aliak: invalidation channel on Redis at %s lost (%s); reconnecting, "
                        "verifiers fall back on their freshness meanwhile",
                        self._where,
                        _scrubbed(f"{type(error).__name__}: {error}", self._password),
                    )
                outage = True
                self._stop.wait(delay)
                delay = min(delay * 2, self._max_backoff)
            finally:
                with contextlib.suppress(Exception):  # closing a dead connection may fail
                    pubsub.close()
