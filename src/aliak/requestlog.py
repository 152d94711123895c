"""The request log: one event per verified or refused request, in Alibaba ActionTrail's
event shape, to a pluggable sink.

A verifier built with ``request_log=`` calls the sink's :meth:`RequestLog.emit` once per
``verify`` (and once per refusing ``precheck``) with a fresh JSON-ready ``dict``::

    {"eventId": "...", "eventVersion": 1, "eventTime": "2024-05-01T12:00:00Z",
     "eventType": "ApiCall", "eventSource": "ecs.cn-hangzhou.aliyuncs.com",
     "serviceName": "ecs", "eventName": "DescribeRegions", "apiVersion": "2014-05-26",
     "acsRegion": "cn-hangzhou", "requestId": "...", "sourceIpAddress": "203.0.113.7",
     "userAgent": "...", "userIdentity": {"type": "ram-user", "accountId": "...",
     "principalId": "alice", "userName": "alice", "arn": "acs:ram::...:user/alice",
     "accessKeyId": "LTAI..."},
     "errorCode": "...", "errorMessage": "...",            (refusals only)
     "additionalEventData": {"signatureScheme": "ACS3", ...}}

What an event never holds: a secret, a security token, a signature (they are removed
from every text field that could echo them). A refused request's ``userIdentity`` holds
only the AccessKey id *as presented* -- it may name no key -- unless the refusal came after
a valid signature (a disabled key, an ACL, a replayed nonce), which proves the caller
holds the key: then the principal is named too. So an event says whether a key exists
only as far as its ``errorCode`` does. Under the opaque profile ``errorCode`` is what the
client was told (``AccessDenied``) and ``additionalEventData.reasonCode`` the precise
reason, for the operator.

Sinks: :class:`LoggingRequestLog` (a :mod:`logging` logger, one JSON line per event; the
default), :class:`SQLiteRequestLog` and :class:`PostgresRequestLog` (a table of their own,
``aliak_request_log``, on a connection of their own, written in batches by a background
thread, so ``emit`` never waits on a disk or a network). A sink is the caller's: a
verifier never closes it.
"""

from __future__ import annotations

import calendar
import contextlib
import json
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol, runtime_checkable

from aliak.errors import AliakError, InvalidParameter
from aliak.model import Account, AssumedRole, Owner, RamUser
from aliak.timestamps import ACS_DATE_FORMAT

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "EVENT_VERSION",
    "TABLE",
    "LoggingRequestLog",
    "PostgresRequestLog",
    "RequestLog",
    "RequestLogEntry",
    "SQLiteRequestLog",
    "request_event",
]

EVENT_VERSION: Final = 1
TABLE: Final = "aliak_request_log"
DEFAULT_LOGGER: Final = "aliak.requests"

_log = logging.getLogger(__name__)

# Bounds on what a client chose, as it is written down.
_MAX_ID = 128
_MAX_HOST = 255
_MAX_USER_AGENT = 512
_MAX_MESSAGE = 4096
# A concealed value shorter than this is not looked for (it would match by chance).
_MIN_CONCEALED = 8
_CONCEALED = "<concealed>"
# An identifier (action, version): printable ASCII, no space.
_is_identifier = re.compile(r"[\x21-\x7e]{1,256}").fullmatch
# <service>.<region>.aliyuncs.com, the endpoints that name a region.
_region_of_host = re.compile(
    r"[a-z0-9-]+\.([a-z]{2,}(?:-[a-z0-9]+)+)\.aliyuncs\.com(?::[0-9]+)?", re.IGNORECASE
).fullmatch
# How many hosts' regions, and which second's text, are remembered.
_MAX_HOSTS = 1024
_regions: dict[str, str | None] = {}
# One (second, text) pair, replaced whole: threads share it without a lock.
_last_second: list[tuple[int, str]] = [(-1, "")]


@runtime_checkable
class RequestLog(Protocol):
    """Where request events go. ``emit`` is called on the request's thread (the event
    loop's, for :class:`~aliak.AsyncVerifier`): it must be quick and must not block. An
    exception out of it is logged and swallowed; it never changes a request's outcome."""

    def emit(self, event: dict[str, Any]) -> None:
        """Take one event (a fresh dict, the sink's to keep)."""
        ...

    def close(self) -> None:
        """Write what is pending and release the sink's resources."""
        ...


class RequestLogEntry(NamedTuple):
    """A stored event and its position in the table (``seq`` only grows)."""

    seq: int
    event: dict[str, Any]


# -- the event --------------------------------------------------------------------------


def _text(
    value: str | None, limit: int, conceal: Sequence[str] = (), *, lines: bool = False
) -> str | None:
    """A client's text as it may be written down: bounded, no control characters (but
    line breaks, with ``lines``), valid UTF-8 (a wire value decoded with
    ``surrogateescape`` may hold lone surrogates), and none of the ``conceal`` values."""
    if value is None:
        return None
    for secret in conceal:
        if secret in value:
            value = value.replace(secret, _CONCEALED)
    if len(value) > limit:
        value = value[:limit]
    if value.isascii() and value.isprintable():
        return value
    cleaned = value.encode("utf-8", "replace").decode("utf-8")
    return "".join(
        char if char.isprintable() or (lines and char == "\n") else "?" for char in cleaned
    )


def _new_id() -> str:
    """A random (version 4) UUID in upper case, as Alibaba writes request and event ids;
    from the OS CSPRNG, formatted by hand (``uuid.uuid4`` costs several times more)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    text = raw.hex().upper()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _event_time(moment: float) -> str:
    """``eventTime``, ISO 8601 UTC to the second; the last second's text is remembered."""
    second = int(moment)
    known, text = _last_second[0]
    if known != second:
        text = time.strftime(ACS_DATE_FORMAT, time.gmtime(second))
        _last_second[0] = (second, text)
    return text


def _region(host: str) -> str | None:
    """The region an Alibaba endpoint names (``ecs.cn-hangzhou.aliyuncs.com``)."""
    try:
        return _regions[host]
    except KeyError:
        pass
    found = _region_of_host(host)
    region = None if found is None else found.group(1).lower()
    if len(_regions) >= _MAX_HOSTS:
        _regions.clear()
    _regions[host] = region
    return region


def _identity(principal: Owner | AssumedRole | None, access_key_id: str | None) -> dict[str, Any]:
    """ActionTrail's ``userIdentity``. aliak keeps no numeric user or role ids, so a RAM
    user's ``principalId`` is its name and an assumed role's ``role:session``."""
    identity: dict[str, Any] = {}
    if isinstance(principal, RamUser):
        identity = {
            "type": "ram-user",
            "accountId": principal.account_id,
            "principalId": principal.name,
            "userName": principal.name,
            "arn": f"acs:ram::{principal.account_id}:user/{principal.name}",
        }
    elif isinstance(principal, AssumedRole):
        session = f"{principal.role.name}:{principal.session_name}"
        identity = {
            "type": "assumed-role",
            "accountId": principal.account_id,
            "principalId": session,
            "userName": session,
            "arn": principal.arn,
        }
    elif isinstance(principal, Account):
        identity = {
            "type": "root-account",
            "accountId": principal.account_id,
            "principalId": principal.account_id,
            "userName": "root",
            "arn": f"acs:ram::{principal.account_id}:root",
        }
    identity["accessKeyId"] = access_key_id
    return identity


def request_event(
    *,
    event_time: float,
    access_key_id: str | None,
    principal: Owner | AssumedRole | None = None,
    action: str | None = None,
    version: str | None = None,
    host: str | None = None,
    service: str | None = None,
    source_ip: str | None = None,
    user_agent: str | None = None,
    request_id: str | None = None,
    scheme: str | None = None,
    algorithm: str | None = None,
    key_type: str | None = None,
    error: AliakError | None = None,
    reason: AliakError | None = None,
    conceal: Sequence[str] = (),
    checked: bool = False,
) -> dict[str, Any]:
    """One event in ActionTrail's shape. ``access_key_id`` is the id as presented;
    ``principal`` only for a caller whose signature was valid; ``error`` the refusal the
    client was told, ``reason`` the precise one where it differs (opaque profile).
    Every text a client chose is bounded and cleaned, with ``conceal`` (the request's
    signature and security token) removed from it; ``checked``: the action and version
    are known identifiers (the verifier checked them)."""
    conceal = tuple(value for value in conceal if value and len(value) >= _MIN_CONCEALED)
    if not checked:
        if action is not None and _is_identifier(action) is None:
            action = None
        if version is not None and _is_identifier(version) is None:
            version = None
    host = _text(host, _MAX_HOST, conceal)
    region = None if host is None else _region(host)
    event: dict[str, Any] = {
        "eventId": _new_id(),
        "eventVersion": EVENT_VERSION,
        "eventTime": _event_time(event_time),
        "eventType": "ApiCall",
        "eventSource": host,
        "serviceName": service,
        "eventName": action,
        "apiVersion": version,
    }
    if region is not None:
        event["acsRegion"] = region
    event["requestId"] = request_id or _new_id()
    event["sourceIpAddress"] = _text(source_ip, _MAX_ID)
    event["userAgent"] = _text(user_agent, _MAX_USER_AGENT, conceal)
    event["userIdentity"] = _identity(principal, _text(access_key_id, _MAX_ID, conceal))
    if error is not None:
        event["errorCode"] = error.code
        # An echoed string to sign is lines: kept (JSON escapes them).
        event["errorMessage"] = _text(error.message, _MAX_MESSAGE, conceal, lines=True)
    additional: dict[str, Any] = {}
    if scheme is not None:
        additional["signatureScheme"] = scheme
    if algorithm is not None:
        additional["signatureMethod"] = algorithm
    if key_type is not None:
        additional["keyType"] = key_type
    if reason is not None and error is not None and reason.code != error.code:
        additional["reasonCode"] = reason.code
    if additional:
        event["additionalEventData"] = additional
    return event


def _dumps(event: Mapping[str, Any]) -> str:
    # ASCII only: one event is always one line, whatever a client put in its fields.
    return json.dumps(event, separators=(",", ":"), ensure_ascii=True)


# -- the logging sink -------------------------------------------------------------------


class LoggingRequestLog:
    """Each event as one JSON line on a :mod:`logging` logger (``aliak.requests`` by
    default, at ``INFO``): the sink for a server that ships its logs already. Nothing
    is formatted for a level the logger does not emit."""

    __slots__ = ("_level", "logger")

    def __init__(
        self, logger: logging.Logger | str = DEFAULT_LOGGER, *, level: int = logging.INFO
    ) -> None:
        self.logger = logging.getLogger(logger) if isinstance(logger, str) else logger
        self._level = level

    def emit(self, event: dict[str, Any]) -> None:
        if self.logger.isEnabledFor(self._level):
            self.logger.log(self._level, "%s", _dumps(event))

    def close(self) -> None:
        """Nothing to release: the logger's handlers are the application's."""


# -- the table sinks --------------------------------------------------------------------


_last_epoch: list[tuple[object, int]] = [(None, 0)]


def _epoch(event_time: object) -> int:
    """``eventTime`` (``2024-05-01T12:00:00Z``) as UNIX seconds; the last one parsed is
    remembered (a batch's events share a few seconds, and parsing costs ~10 µs)."""
    known, seconds = _last_epoch[0]
    if event_time == known:
        return seconds
    if isinstance(event_time, str):
        try:
            seconds = calendar.timegm(time.strptime(event_time, ACS_DATE_FORMAT))
        except ValueError:
            pass
        else:
            _last_epoch[0] = (event_time, seconds)
            return seconds
    return int(time.time())


def _columns(event: Mapping[str, Any]) -> tuple[Any, ...]:
    """The indexed columns of a row, beside the event itself."""
    identity = event.get("userIdentity") or {}
    additional = event.get("additionalEventData") or {}
    user_name = identity.get("userName") if identity.get("type") == "ram-user" else None
    return (
        _epoch(event.get("eventTime")),
        event.get("eventId"),
        event.get("requestId"),
        identity.get("accessKeyId"),
        identity.get("accountId"),
        user_name,
        event.get("eventName"),
        event.get("errorCode"),
        additional.get("reasonCode"),
        event.get("sourceIpAddress"),
    )


_COLUMNS: Final = (
    "at, event_id, request_id, access_key_id, account_id, user_name, action, error_code, "
    "reason_code, source_ip, event"
)


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
_SECOND: Final = timedelta(seconds=1)


def _first_second_from(moment: datetime) -> int:
    """The first whole second at or after ``moment`` (UTC when it has no offset): an
    event carries whole seconds, so ``since=12:00:00.5`` must not select 12:00:00. Exact
    (timedelta arithmetic): a float timestamp may round a microsecond away."""
    return -((_EPOCH - _utc(moment)) // _SECOND)


def _last_second_until(moment: datetime) -> int:
    """The last whole second at or before ``moment``: ``until`` is inclusive."""
    return (_utc(moment) - _EPOCH) // _SECOND


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.utcoffset() is None else moment


def _where(
    mark: str,
    *,
    access_key_id: str | None,
    account_id: str | None,
    user_name: str | None,
    action: str | None,
    error_code: str | None,
    accepted: bool | None,
    since: datetime | None,
    until: datetime | None,
    after: int | None,
) -> tuple[str, list[Any]]:
    """The WHERE clause of a query (only constant fragments; every value is bound)."""
    conditions: list[str] = []
    values: list[Any] = []
    for column, value in (
        ("access_key_id", access_key_id),
        ("account_id", account_id),
        ("user_name", user_name),
        ("action", action),
    ):
        if value is not None:
            conditions.append(f"{column} = {mark}")
            values.append(value)
    if error_code is not None:
        conditions.append(f"(error_code = {mark} OR reason_code = {mark})")
        values.extend((error_code, error_code))
    if accepted is not None:
        conditions.append("error_code IS NULL" if accepted else "error_code IS NOT NULL")
    if since is not None:
        conditions.append(f"at >= {mark}")
        values.append(_first_second_from(since))
    if until is not None:
        conditions.append(f"at <= {mark}")
        values.append(_last_second_until(until))
    if after is not None:
        conditions.append(f"seq > {mark}")
        values.append(after)
    return (f"WHERE {' AND '.join(conditions)} " if conditions else ""), values


def _check_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise InvalidParameter("limit", detail="a whole number >= 0")
    return limit


class _BatchWriter:
    """Events queued by ``emit`` (never blocking on I/O) and written in batches by one
    background thread: when ``batch_size`` are pending, ``flush_interval`` seconds after
    the first of a batch, at :meth:`flush` and at :meth:`close`. A batch that fails is
    kept for the next attempt while fewer than ``max_pending`` events wait; past that,
    new events are dropped and counted in :attr:`dropped` (a warning is logged)."""

    def __init__(
        self, *, batch_size: int, flush_interval: float, max_pending: int, name: str
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidParameter("batch_size", detail="a whole number >= 1")
        if not isinstance(flush_interval, (int, float)) or not flush_interval > 0:
            raise InvalidParameter("flush_interval", detail="seconds, a number > 0")
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
            raise InvalidParameter("max_pending", detail="a whole number >= 1")
        self._batch_size = batch_size
        self._flush_interval = float(flush_interval)
        self._max_pending = max(max_pending, batch_size)
        self._name = name
        self._wake = threading.Condition(threading.Lock())
        self._pending: list[dict[str, Any]] = []
        self._thread: threading.Thread | None = None
        self._closed = False
        self._asked = 0  # flush requests made ...
        self._done = 0  # ... and answered
        self._failed = False
        self.dropped = 0
        self.written = 0

    # -- the request side --------------------------------------------------------------

    def emit(self, event: dict[str, Any]) -> None:
        with self._wake:
            if self._closed or len(self._pending) >= self._max_pending:
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 10_000 == 0:
                    _log.warning("aliak: %s dropped %d request events", self._name, self.dropped)
                return
            self._pending.append(event)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"aliak-{self._name}", daemon=True
                )
                self._thread.start()
            count = len(self._pending)
            if count == 1 or count >= self._batch_size:
                self._wake.notify()

    def flush(self, timeout: float | None = 10.0) -> None:
        """Wait until what was emitted before this call was written (or failed)."""
        with self._wake:
            if self._thread is None:
                return
            self._asked += 1
            ticket = self._asked
            self._wake.notify_all()
            self._wake.wait_for(lambda: self._done >= ticket, timeout=timeout)

    def close(self) -> None:
        """Write what is pending (one attempt), stop the thread, close the connection."""
        with self._wake:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            self._wake.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)

    # -- the writer's side ---------------------------------------------------------------

    def _run(self) -> None:
        connection: Any = None
        try:
            while True:
                batch, ticket, closing = self._next_batch()
                if batch:
                    connection = self._write_batch(connection, batch, closing)
                with self._wake:
                    self._done = max(self._done, ticket)
                    self._wake.notify_all()
                if closing:
                    return
        finally:
            if connection is not None:
                with contextlib.suppress(Exception):  # closing at exit: nothing left to do
                    connection.close()

    def _next_batch(self) -> tuple[list[dict[str, Any]], int, bool]:
        with self._wake:
            while not self._pending and not self._closed and self._done >= self._asked:
                self._wake.wait()
            deadline = time.monotonic() + (self._flush_interval * (4 if self._failed else 1))
            while (
                len(self._pending) < self._batch_size
                and not self._closed
                and self._done >= self._asked
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._wake.wait(remaining)
            batch, self._pending = self._pending, []
            return batch, self._asked, self._closed

    def _write_batch(self, connection: Any, batch: list[dict[str, Any]], closing: bool) -> Any:
        try:
            if connection is None:
                connection = self._connect()
            self._write(connection, batch)
        except Exception as error:  # a full disk, a lock held too long, a lost server
            self._failed = True
            _log.warning(
                "aliak: %s could not write %d request events (%s)%s",
                self._name,
                len(batch),
                type(error).__name__,
                "; they are dropped" if closing else "; retrying",
            )
            if connection is not None:
                with contextlib.suppress(Exception):  # broken: a new one is opened next time
                    connection.close()
            with self._wake:
                if closing:
                    self.dropped += len(batch)
                else:
                    keep = batch + self._pending
                    self.dropped += max(0, len(keep) - self._max_pending)
                    self._pending = keep[: self._max_pending]
            return None
        self._failed = False
        self.written += len(batch)
        return connection

    def _connect(self) -> Any:
        raise NotImplementedError

    def _write(self, connection: Any, batch: list[dict[str, Any]]) -> None:
        raise NotImplementedError


_SQLITE_SCHEMA: Final = (
    f"""CREATE TABLE IF NOT EXISTS {TABLE} (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        event_id TEXT NOT NULL,
        request_id TEXT,
        access_key_id TEXT,
        account_id TEXT,
        user_name TEXT,
        action TEXT,
        error_code TEXT,
        reason_code TEXT,
        source_ip TEXT,
        event TEXT NOT NULL
    )""",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_by_time ON {TABLE} (at)",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_by_key ON {TABLE} (access_key_id, at)",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_by_account ON {TABLE} (account_id, user_name, at)",
)
_SQLITE_INSERT: Final = f"INSERT INTO {TABLE} ({_COLUMNS}) VALUES ({', '.join('?' * 11)})"  # noqa: S608
_PRIVATE_MODE: Final = 0o600


class SQLiteRequestLog(_BatchWriter):
    """Events in the table ``aliak_request_log`` of a SQLite file -- the store's own file
    or another -- created if missing (``CREATE TABLE IF NOT EXISTS``), in WAL mode, on
    connections of its own: written in batches (one transaction each) by a background
    thread, read back newest first by :meth:`events`.

    Sharing the store's file is fine: a batch is one short write transaction every
    ``flush_interval`` seconds at most. ``create=False`` opens an existing log only
    (for reading: :attr:`exists` says whether there is one).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        batch_size: int = 256,
        flush_interval: float = 0.5,
        max_pending: int = 100_000,
        busy_timeout: float = 5.0,
        create: bool = True,
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            flush_interval=flush_interval,
            max_pending=max_pending,
            name="sqlite-request-log",
        )
        self.path = str(path)
        self._busy_timeout = float(busy_timeout)
        if create:
            self._create()

    def __repr__(self) -> str:
        return f"SQLiteRequestLog({self.path!r})"

    def _open(self, *, read_only: bool = False) -> sqlite3.Connection:
        if read_only:
            uri = Path(self.path).absolute().as_uri() + "?mode=ro"
            return sqlite3.connect(uri, uri=True, timeout=self._busy_timeout)
        connection = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
        connection.execute("PRAGMA synchronous = NORMAL")
        return connection

    def _create(self) -> None:
        if not os.path.exists(self.path):
            # Key ids, addresses, user names: not secrets, but nobody else's business.
            with contextlib.suppress(FileExistsError):
                os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, _PRIVATE_MODE))
        connection = self._open()
        try:
            deadline = time.monotonic() + self._busy_timeout
            while True:
                try:
                    connection.execute("PRAGMA journal_mode = WAL")
                    break
                except sqlite3.OperationalError:
                    # A new file switched to WAL by two processes at once: one waits.
                    if time.monotonic() >= deadline:
                        raise
                    time.sleep(0.01)
            for statement in _SQLITE_SCHEMA:
                connection.execute(statement)
        finally:
            connection.close()

    @property
    def exists(self) -> bool:
        """Whether the file holds the request-log table."""
        if not os.path.exists(self.path):
            return False
        connection = self._open(read_only=True)
        try:
            found = connection.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (TABLE,)
            ).fetchone()
        finally:
            connection.close()
        return found is not None

    def _connect(self) -> sqlite3.Connection:
        return self._open()

    def _write(self, connection: sqlite3.Connection, batch: list[dict[str, Any]]) -> None:
        rows = [(*_columns(event), _dumps(event)) for event in batch]
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.executemany(_SQLITE_INSERT, rows)
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def events(
        self,
        *,
        access_key_id: str | None = None,
        account_id: str | None = None,
        user_name: str | None = None,
        action: str | None = None,
        error_code: str | None = None,
        accepted: bool | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        after: int | None = None,
    ) -> list[RequestLogEntry]:
        """Stored events matching every filter given: newest first, at most ``limit``;
        or, with ``after`` (a ``seq`` seen before), those written since, oldest first
        (for following the log). ``error_code`` matches the code the client was told or
        the precise reason; ``accepted`` selects accepted (``True``) or refused events.
        ``since`` and ``until`` (UTC when naive) are both inclusive; an event carries a
        whole second, so a fraction in ``since`` rounds up and in ``until`` down, as the
        audit trail's ``since`` does. Only what was written is seen: :meth:`flush` first
        to include what is pending."""
        limit = _check_limit(limit)
        if not self.exists:
            return []
        where, values = _where(
            "?",
            access_key_id=access_key_id,
            account_id=account_id,
            user_name=user_name,
            action=action,
            error_code=error_code,
            accepted=accepted,
            since=since,
            until=until,
            after=after,
        )
        order = "seq" if after is not None else "at DESC, seq DESC"
        connection = self._open(read_only=True)
        try:
            rows = connection.execute(
                f"SELECT seq, event FROM {TABLE} {where}ORDER BY {order} LIMIT ?",  # noqa: S608
                [*values, limit],
            ).fetchall()
        finally:
            connection.close()
        return [RequestLogEntry(int(seq), json.loads(text)) for seq, text in rows]


def _postgres_schema(schema: str) -> Callable[[Any], Sequence[Any]]:
    """The statements that create the table in ``schema`` (psycopg ``sql`` objects)."""

    def statements(sql: Any) -> Sequence[Any]:
        table = sql.Identifier(schema, TABLE)
        return (
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)),
            sql.SQL(
                """CREATE TABLE IF NOT EXISTS {} (
                    seq BIGSERIAL PRIMARY KEY,
                    at BIGINT NOT NULL,
                    event_id TEXT NOT NULL,
                    request_id TEXT,
                    access_key_id TEXT,
                    account_id TEXT,
                    user_name TEXT,
                    action TEXT,
                    error_code TEXT,
                    reason_code TEXT,
                    source_ip TEXT,
                    event JSONB NOT NULL
                )"""
            ).format(table),
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (at)").format(
                sql.Identifier(f"{TABLE}_by_time"), table
            ),
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (access_key_id, at)").format(
                sql.Identifier(f"{TABLE}_by_key"), table
            ),
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (account_id, user_name, at)").format(
                sql.Identifier(f"{TABLE}_by_account"), table
            ),
        )

    return statements


class PostgresRequestLog(_BatchWriter):
    """Events in the table ``aliak_request_log`` of a PostgreSQL database (in ``schema``,
    created if missing), through a psycopg connection of its own, written in batches by a
    background thread, read back by :meth:`events` as :class:`SQLiteRequestLog` does.
    ``event`` is a ``jsonb`` column. The DSN (which may hold a password) is never logged;
    a failed write is logged by its error type alone and retried on a new connection.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "public",
        batch_size: int = 256,
        flush_interval: float = 0.5,
        max_pending: int = 100_000,
        connect_timeout: float = 5.0,
        create: bool = True,
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            flush_interval=flush_interval,
            max_pending=max_pending,
            name="postgres-request-log",
        )
        if not isinstance(dsn, str) or not dsn:
            raise InvalidParameter("dsn", detail="a PostgreSQL connection string")
        if not isinstance(schema, str) or not schema:
            raise InvalidParameter("schema", detail="a schema name")
        self._dsn = dsn
        self.schema = schema
        self._connect_timeout = connect_timeout
        if create:
            from psycopg import sql  # noqa: PLC0415 - an optional dependency

            with self._open() as connection:
                for statement in _postgres_schema(schema)(sql):
                    connection.execute(statement)

    def __repr__(self) -> str:
        return f"PostgresRequestLog(schema={self.schema!r})"

    def _open(self) -> psycopg.Connection[Any]:
        import psycopg  # noqa: PLC0415 - an optional dependency

        return psycopg.connect(
            self._dsn, autocommit=True, connect_timeout=max(1, round(self._connect_timeout))
        )

    def _connect(self) -> psycopg.Connection[Any]:
        return self._open()

    def _write(self, connection: psycopg.Connection[Any], batch: list[dict[str, Any]]) -> None:
        from psycopg import sql  # noqa: PLC0415 - an optional dependency
        from psycopg.types.json import Jsonb  # noqa: PLC0415

        statement = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            sql.Identifier(self.schema, TABLE),
            sql.SQL(_COLUMNS),
            sql.SQL(", ").join(sql.Placeholder() * 11),
        )
        rows = [(*_columns(event), Jsonb(event)) for event in batch]
        with connection.transaction(), connection.cursor() as cursor:
            cursor.executemany(statement, rows)

    def events(
        self,
        *,
        access_key_id: str | None = None,
        account_id: str | None = None,
        user_name: str | None = None,
        action: str | None = None,
        error_code: str | None = None,
        accepted: bool | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        after: int | None = None,
    ) -> list[RequestLogEntry]:
        """As :meth:`SQLiteRequestLog.events`."""
        from psycopg import sql  # noqa: PLC0415 - an optional dependency

        limit = _check_limit(limit)
        where, values = _where(
            "%s",
            access_key_id=access_key_id,
            account_id=account_id,
            user_name=user_name,
            action=action,
            error_code=error_code,
            accepted=accepted,
            since=since,
            until=until,
            after=after,
        )
        order = "seq" if after is not None else "at DESC, seq DESC"
        query = sql.SQL("SELECT seq, event FROM {} {}ORDER BY {} LIMIT %s").format(
            sql.Identifier(self.schema, TABLE), sql.SQL(where), sql.SQL(order)
        )
        with self._open() as connection:
            rows = connection.execute(query, [*values, limit]).fetchall()
        return [RequestLogEntry(int(seq), dict(event)) for seq, event in rows]
