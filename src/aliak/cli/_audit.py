"""``aliak audit``: the append-only audit trail, oldest first."""

from __future__ import annotations

import argparse
from datetime import datetime, timezone

from aliak.cli._console import Console, utc_text
from aliak.cli._keys import owner_from
from aliak.cli._store import open_store
from aliak.keys import KeyManager

__all__ = ["add_audit_command", "parse_utc"]

_COLUMNS = ("At", "Action", "AccessKeyId", "AccountId", "UserName", "Actor", "Detail")


def parse_utc(text: str) -> datetime:
    """An ISO 8601 time (``2024-05-01T12:00:00Z``); without an offset it is UTC.
    (argparse type: a malformed time is a usage error.)"""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"  # Python 3.10's fromisoformat does not read "Z"
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


def _audit(args: argparse.Namespace, console: Console) -> int:
    if args.user is not None and args.account is None:
        args.subparser.error("--user needs --account")
    owner = None if args.account is None else owner_from(args.account, args.user)
    with open_store(args.db) as store:
        events = KeyManager(store).audit_events(
            access_key_id=args.key, owner=owner, since=args.since, limit=args.limit
        )
    rows = [
        {
            "At": utc_text(event.at),
            "Action": event.action,
            "AccessKeyId": event.access_key_id,
            "AccountId": event.account_id,
            "UserName": event.user_name,
            "Actor": event.actor,
            "Detail": event.detail,
        }
        for event in events
    ]
    console.records(_COLUMNS, rows, empty="no audit events match")
    return 0


def add_audit_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    audit = commands.add_parser(
        "audit",
        parents=[common],
        help="the audit trail of every change, oldest first",
        description="The append-only audit trail, oldest first, filtered by key, owner and "
        "time. --account alone selects the events about the account itself (its own keys "
        "and policy); add --user for a RAM user's.",
    )
    audit.add_argument("--key", metavar="ID", help="events about this AccessKey id")
    audit.add_argument("--account", metavar="ID", help="events about this account")
    audit.add_argument("--user", metavar="NAME", help="events about this RAM user (with --account)")
    audit.add_argument(
        "--since", type=parse_utc, metavar="ISO", help="events at or after this UTC time"
    )
    audit.add_argument(
        "--limit", type=_limit, default=1000, metavar="N", help="at most N events (default 1000)"
    )
    audit.set_defaults(run=_audit, subparser=audit)
