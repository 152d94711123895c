"""``aliak audit``: the append-only audit trail; with ``--requests``, the request log.

Both are shown newest first, as an operator looking at what just happened reads them;
``--order oldest`` shows the same events the other way round, a history read top to
bottom. ``--limit N`` keeps the *newest* N events that match, whichever the order, and
``--since``/``--until`` bound the time, both inclusive: an event at exactly ``--since``
or exactly ``--until`` is shown (times are whole seconds; a fraction in ``--since``
rounds up, in ``--until`` down). ``--follow`` prints the newest events, then every new
one as it is written, until interrupted (SIGINT): one line each, JSON Lines under
``--json``. A stream can only grow at its end, so ``--follow`` prints every event in the
order it arrived, oldest first, the initial newest ones too (as ``tail -f``); it takes
no ``--order newest`` and no ``--until``.

The trail is read through the store's own ``audit_events`` (oldest first, from a time),
so it works on every store the command opens: pages are walked with a cursor of (second,
events already seen in that second), which is exact because a store keeps append order
within a second. The request log is the ``aliak_request_log`` table a
:class:`~aliak.SQLiteRequestLog` writes (``aliak serve --request-log PATH``): in the
store's own file by default, or ``--request-log PATH``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from aliak.cli._console import CommandFailed, Console, utc_text
from aliak.cli._keys import owner_from
from aliak.cli._store import open_admin_store
from aliak.keys import KeyManager
from aliak.model import AuditEvent
from aliak.requestlog import RequestLogEntry, SQLiteRequestLog

__all__ = ["add_audit_command", "parse_utc"]

_COLUMNS = ("At", "Action", "AccessKeyId", "AccountId", "UserName", "Actor", "Detail")
_REQUEST_COLUMNS = (
    "Time",
    "Action",
    "Result",
    "AccessKeyId",
    "AccountId",
    "UserName",
    "SourceIp",
    "RequestId",
)
DEFAULT_LIMIT = 1000
DEFAULT_FOLLOW_LIMIT = 10
# Events asked of the store per page, walking the trail.
_PAGE = 500
# The first look back for the newest events, widened sixteenfold until enough are found.
_FIRST_WINDOW = timedelta(hours=1)
_WIDENING = 16

# The fraction of seconds of an ISO 8601 time, before any offset.
_FRACTION = re.compile(r"(?<=:\d\d)\.(\d+)")

Fetch = Callable[[datetime | None, int], list[AuditEvent]]


def parse_utc(text: str) -> datetime:
    """An ISO 8601 time (``2024-05-01T12:00:00Z``); without an offset it is UTC.
    (argparse type: a malformed time is a usage error.)"""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"  # Python 3.10's fromisoformat does not read "Z"
    # Nor a fraction of other than 3 or 6 digits ("12:00:00.5"): pad or cut it to 6.
    value = _FRACTION.sub(lambda match: "." + (match.group(1) + "00000")[:6], value, count=1)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 UTC time such as 2024-05-01T12:00:00Z, got {text!r}"
        ) from None
    if moment.utcoffset() is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.01 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"expected seconds between 0.01 and 3600, got {text!r}")
    return value


# -- the audit trail, walked through the store's API ------------------------------------


class _Cursor:
    """A position in the trail: every event before ``second`` was seen, and the first
    ``seen`` events of ``second`` (the store keeps append order within a second)."""

    __slots__ = ("second", "seen")

    def __init__(self, second: datetime | None) -> None:
        self.second = second
        self.seen = 0

    def walk(self, fetch: Fetch, until: datetime | None = None) -> Iterator[AuditEvent]:
        """The events after the cursor, in order, up to ``until``; the cursor moves on."""
        while True:
            asked = self.seen + _PAGE
            page = fetch(self.second, asked)
            for event in page[self.seen :]:
                if until is not None and event.at > until:
                    return
                if event.at != self.second:
                    self.second, self.seen = event.at, 0
                self.seen += 1
                yield event
            if len(page) < asked:
                return


def _newest(
    fetch: Fetch,
    *,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    keep: Callable[[AuditEvent], bool],
) -> tuple[list[AuditEvent], _Cursor]:
    """The newest ``limit`` events between ``since`` and ``until`` that ``keep`` keeps,
    oldest first, and the cursor after the last event read: found by looking back from
    ``until`` (or now) over widening windows, so a long trail is not read whole."""
    first = fetch(since, 1)
    if not first:
        return [], _Cursor(since)
    earliest = first[0].at
    end = until or datetime.now(timezone.utc)
    width = _FIRST_WINDOW
    while True:
        start = max(earliest, end - width)
        cursor = _Cursor(start)
        found: deque[AuditEvent] = deque(maxlen=max(limit, 1))
        for event in cursor.walk(fetch, until):
            if keep(event):
                found.append(event)
        if len(found) >= limit or start <= earliest:
            return (list(found)[-limit:] if limit else []), cursor
        width *= _WIDENING


def _audit_row(event: AuditEvent) -> dict[str, Any]:
    return {
        "At": utc_text(event.at),
        "Action": event.action,
        "AccessKeyId": event.access_key_id,
        "AccountId": event.account_id,
        "UserName": event.user_name,
        "Actor": event.actor,
        "Detail": event.detail,
    }


# -- the request log --------------------------------------------------------------------


def _request_row(event: Mapping[str, Any]) -> dict[str, Any]:
    identity = event.get("userIdentity") or {}
    return {
        "Time": event.get("eventTime"),
        "Action": event.get("eventName"),
        "Result": event.get("errorCode") or "OK",
        "AccessKeyId": identity.get("accessKeyId"),
        "AccountId": identity.get("accountId"),
        "UserName": identity.get("userName"),
        "SourceIp": event.get("sourceIpAddress"),
        "RequestId": event.get("requestId"),
    }


def _open_request_log(location: str) -> SQLiteRequestLog:
    if location.startswith(("postgresql://", "postgres://")):
        raise CommandFailed(
            "the request log is read from a SQLite file (aliak serve --request-log PATH): "
            "give --request-log PATH, or query the aliak_request_log table in PostgreSQL"
        )
    path = Path(location)
    if not path.is_file():
        raise CommandFailed(f"no request log at {path}: aliak serve --request-log PATH writes one")
    log = SQLiteRequestLog(path, create=False)
    if not log.exists:
        raise CommandFailed(
            f"{path} holds no request log: aliak serve --request-log {path} writes one"
        )
    return log


# -- output -------------------------------------------------------------------------------


def _line(columns: Sequence[str], row: Mapping[str, Any]) -> str:
    """One event on one line, for --follow (a table cannot be aligned in advance)."""
    return "  ".join("-" if row.get(column) is None else str(row[column]) for column in columns)


class _Stream:
    """What --follow prints: a header (text), then one line per event, flushed."""

    def __init__(self, console: Console, columns: Sequence[str]) -> None:
        self.console = console
        self.columns = columns
        if not console.json_output:
            console.line("  ".join(columns))
            console.out.flush()

    def write(self, items: Sequence[Any], as_row: Callable[[Any], dict[str, Any]]) -> None:
        for item in items:
            if self.console.json_output:
                value = item if isinstance(item, dict) else as_row(item)
                self.console.line(json.dumps(value, ensure_ascii=False, separators=(",", ":")))
            else:
                self.console.line(_line(self.columns, as_row(item)))
        self.console.out.flush()


def _follow(poll: Callable[[], None], interval: float) -> int:
    """Poll until interrupted: SIGINT (Ctrl-C) is the normal way out, exit status 0."""
    try:
        while True:
            time.sleep(interval)
            poll()
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # | head: the reader is gone; nothing more to flush to it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


# -- the commands -------------------------------------------------------------------------


def _check(args: argparse.Namespace) -> None:
    if args.user is not None and args.account is None:
        args.subparser.error("--user needs --account")
    if args.follow and args.until is not None:
        args.subparser.error("--follow prints events as they come: it takes no --until")
    if args.follow and args.order == "newest":
        args.subparser.error(
            "--follow prints events in the order they arrive: it takes no --order newest"
        )
    if not args.requests:
        for option, value in (
            ("--code", args.code),
            ("--result", args.result),
            ("--request-log", args.request_log),
        ):
            if value is not None:
                args.subparser.error(f"{option} is for the request log: add --requests")


def _audit(args: argparse.Namespace, console: Console) -> int:
    _check(args)
    if args.requests:
        return _requests(args, console)
    limit = args.limit
    if limit is None:
        limit = DEFAULT_FOLLOW_LIMIT if args.follow else DEFAULT_LIMIT
    owner = None if args.account is None else owner_from(args.account, args.user)
    action = args.action

    def keep(event: AuditEvent) -> bool:
        return action is None or event.action == action

    # Reading the trail claims no nonce: $ALIAK_NONCES (Redis) is not needed, nor opened.
    with open_admin_store(args.db) as store:
        keys = KeyManager(store)

        def fetch(since: datetime | None, count: int) -> list[AuditEvent]:
            return keys.audit_events(access_key_id=args.key, owner=owner, since=since, limit=count)

        events, cursor = _newest(fetch, since=args.since, until=args.until, limit=limit, keep=keep)
        if args.follow:
            stream = _Stream(console, _COLUMNS)
            stream.write(events, _audit_row)

            def poll() -> None:
                stream.write([event for event in cursor.walk(fetch) if keep(event)], _audit_row)

            return _follow(poll, args.interval)
    if args.order != "oldest":
        events.reverse()
    console.records(
        _COLUMNS, [_audit_row(event) for event in events], empty="no audit events match"
    )
    return 0


def _requests(args: argparse.Namespace, console: Console) -> int:
    limit = args.limit
    if limit is None:
        limit = DEFAULT_FOLLOW_LIMIT if args.follow else DEFAULT_LIMIT
    log = _open_request_log(args.request_log or args.db)
    filters: dict[str, Any] = {
        "access_key_id": args.key,
        "account_id": args.account,
        "user_name": args.user,
        "action": args.action,
        "error_code": args.code,
        "accepted": None if args.result is None else args.result == "accepted",
    }
    entries = log.events(**filters, since=args.since, until=args.until, limit=limit)
    if args.follow:
        entries.reverse()  # as they came
        stream = _Stream(console, _REQUEST_COLUMNS)
        stream.write([entry.event for entry in entries], _request_row)
        last = [max((entry.seq for entry in entries), default=_last_seq(log))]

        def poll() -> None:
            new: list[RequestLogEntry] = log.events(**filters, after=last[0], limit=_PAGE)
            while new:
                stream.write([entry.event for entry in new], _request_row)
                last[0] = new[-1].seq
                if len(new) < _PAGE:
                    break
                new = log.events(**filters, after=last[0], limit=_PAGE)

        return _follow(poll, args.interval)
    if args.order == "oldest":
        entries.reverse()
    console.records(
        _REQUEST_COLUMNS,
        [entry.event for entry in entries]
        if console.json_output
        else [_request_row(entry.event) for entry in entries],
        empty="no request events match",
    )
    return 0


def _last_seq(log: SQLiteRequestLog) -> int:
    """Where following starts when nothing matched yet: after the newest event."""
    newest = log.events(limit=1)
    return newest[0].seq if newest else 0


def add_audit_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    audit = commands.add_parser(
        "audit",
        parents=[common],
        help="the audit trail of every change; with --requests, the request log",
        description="The append-only audit trail, filtered by key, owner, action and time: "
        "the newest --limit events, newest first (--order oldest for a history read top to "
        "bottom). --account alone selects the events about the account itself (its own keys "
        "and policy); add --user for a RAM user's. With --requests: the request log that "
        "aliak serve --request-log writes (every verified or refused request, in "
        "ActionTrail's event shape), in the same order; there --account alone selects every "
        "principal of the account. --follow prints the newest events, then new ones as they "
        "arrive, all in arrival order (oldest first), one per line (JSON Lines with --json), "
        "until Ctrl-C.",
    )
    audit.add_argument("--key", metavar="ID", help="events about this AccessKey id")
    audit.add_argument("--account", metavar="ID", help="events about this account")
    audit.add_argument("--user", metavar="NAME", help="events about this RAM user (with --account)")
    audit.add_argument(
        "--action", metavar="NAME", help="events of this action (CreateAccessKey, an API name)"
    )
    audit.add_argument(
        "--since", type=parse_utc, metavar="ISO", help="events at or after this UTC time"
    )
    audit.add_argument(
        "--until", type=parse_utc, metavar="ISO", help="events at or before this UTC time"
    )
    audit.add_argument(
        "--limit",
        type=_limit,
        default=None,
        metavar="N",
        help=f"the newest N events (default {DEFAULT_LIMIT}; {DEFAULT_FOLLOW_LIMIT} with --follow)",
    )
    audit.add_argument(
        "--order",
        choices=("oldest", "newest"),
        help="which first (default newest; --follow prints in arrival order, oldest first)",
    )
    audit.add_argument(
        "--follow",
        action="store_true",
        help="then print new events as they are written, until interrupted (Ctrl-C)",
    )
    audit.add_argument(
        "--interval",
        type=_interval,
        default=1.0,
        metavar="SECONDS",
        help="how often --follow looks for new events (default 1)",
    )
    audit.add_argument(
        "--requests",
        action="store_true",
        help="the request log instead of the audit trail",
    )
    audit.add_argument(
        "--request-log",
        metavar="PATH",
        help="the SQLite file holding the request log (default: the --db file)",
    )
    audit.add_argument(
        "--code",
        metavar="CODE",
        help="requests refused with this code (as told, or the precise reason; --requests)",
    )
    audit.add_argument(
        "--result",
        choices=("accepted", "refused"),
        help="only accepted or only refused requests (--requests)",
    )
    audit.set_defaults(run=_audit, subparser=audit)
