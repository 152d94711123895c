"""``aliak keys ...``: the AccessKey lifecycle, in the RAM console's words.

A secret is printed once, by the commands that create a key (``create``, ``rotate``),
with a warning on stderr; every other command shows metadata only.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

from aliak.cli._console import Console, utc_text
from aliak.cli._store import open_store
from aliak.keys import AccessKeyInfo, KeyManager, NewAccessKey, RootAccessKeyWarning
from aliak.model import Account, Owner, RamUser

__all__ = ["SHOWN_ONCE_WARNING", "add_keys_commands", "owner_from"]

SHOWN_ONCE_WARNING = (
    "this is the only time the secret is shown: store it now (a secret manager, your "
    "CI's secret store); it can never be shown again"
)

_KEY_COLUMNS = (
    "AccessKeyId",
    "Status",
    "UserPrincipalName",
    "CreateDate",
    "LastUsedDate",
    "ServiceName",
    "RootKey",
    "LeakRestricted",
)
_RECYCLE_BIN_COLUMNS = (*_KEY_COLUMNS[:4], "RecycleDate", "DeleteDate")

Command = Callable[[argparse.Namespace, Console], int]


def owner_from(account_id: str, user_name: str | None) -> Owner:
    """The RAM user, or with no user name the account itself (validated here, before
    any store is opened)."""
    return Account(account_id) if user_name is None else RamUser(account_id, user_name)


@contextmanager
def _show_root_key_warnings(console: Console) -> Iterator[None]:
    """Print the :class:`RootAccessKeyWarning` a key creation raises, on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RootAccessKeyWarning)
        yield
    for warning in caught:
        if issubclass(warning.category, RootAccessKeyWarning):
            console.warn(str(warning.message))
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )


def _print_new_key(console: Console, new: NewAccessKey, extra: dict[str, str]) -> None:
    console.warn(SHOWN_ONCE_WARNING)
    if console.json_output:
        console.json(new.to_ram_dict())  # the fixed form: these four fields, nothing else
    else:
        console.fields(
            {**new.to_ram_dict(), "UserPrincipalName": new.owner.principal_name, **extra}
        )


# -- creating -----------------------------------------------------------------------


def _create(args: argparse.Namespace, console: Console) -> int:
    owner = owner_from(args.account, args.user)
    with open_store(args.db, may_create=True) as store, _show_root_key_warnings(console):
        new = KeyManager(store).create_access_key(owner)
    _print_new_key(console, new, {})
    return 0


def _rotate(args: argparse.Namespace, console: Console) -> int:
    with open_store(args.db) as store, _show_root_key_warnings(console):
        new = KeyManager(store).rotate_access_key(args.access_key_id)
    _print_new_key(console, new, {"Replaces": args.access_key_id})
    console.note(
        f"next: move every client to {new.access_key_id}, watch `aliak keys last-used "
        f"{args.access_key_id}`, then disable and delete {args.access_key_id}"
    )
    return 0


# -- reading ------------------------------------------------------------------------


def _list(args: argparse.Namespace, console: Console) -> int:
    owner = owner_from(args.account, args.user)
    with open_store(args.db) as store:
        keys = KeyManager(store).list_access_keys(owner)
    rows = [info.to_ram_dict() for info in keys]
    console.records(
        _KEY_COLUMNS, rows, empty=f"no keys outside the recycle bin for {owner.principal_name}"
    )
    return 0


def _recycle_bin(args: argparse.Namespace, console: Console) -> int:
    owner = owner_from(args.account, args.user)
    with open_store(args.db) as store:
        keys = KeyManager(store).list_recycle_bin(owner)
    rows = [info.to_ram_dict() for info in keys]
    console.records(
        _RECYCLE_BIN_COLUMNS, rows, empty=f"the recycle bin of {owner.principal_name} is empty"
    )
    return 0


def _show(args: argparse.Namespace, console: Console) -> int:
    with open_store(args.db) as store:
        info = KeyManager(store).get_access_key(args.access_key_id)
    console.record(info.to_ram_dict())
    return 0


def _last_used(args: argparse.Namespace, console: Console) -> int:
    with open_store(args.db) as store:
        manager = KeyManager(store)
        last = manager.get_last_used(args.access_key_id)
        history = manager.source_ip_history(args.access_key_id) if args.ips else None
    record: dict[str, object] = {
        "AccessKeyId": args.access_key_id,
        "LastUsedDate": None if last is None else utc_text(last.used_at),
        "ServiceName": None if last is None else last.service_name,
    }
    ips = [
        {
            "SourceIp": use.source_ip,
            "FirstSeen": utc_text(use.first_seen),
            "LastSeen": utc_text(use.last_seen),
        }
        for use in history or ()
    ]
    if console.json_output:
        console.json({**record, "SourceIps": ips} if args.ips else record)
        return 0
    console.fields(record)
    if args.ips:
        console.line()
        if ips:
            console.table(("SourceIp", "FirstSeen", "LastSeen"), ips)
        else:
            console.line("no source IP recorded")
    return 0


def _find_owner(args: argparse.Namespace, console: Console) -> int:
    locations = [args.db, *(args.db_also or ())]
    with ExitStack() as stores:
        store = stores.enter_context(open_store(args.db))
        # Only key metadata is read from the others: no master key needed, none touched.
        others = [
            stores.enter_context(open_store(location, reads_secrets=False))
            for location in locations[1:]
        ]
        found = KeyManager(store).find_owner(args.access_key_id, *others)
    owner = found.owner
    console.record(
        {
            "AccessKeyId": found.access_key_id,
            "AccountId": owner.account_id,
            "UserName": owner.name if isinstance(owner, RamUser) else None,
            "UserPrincipalName": owner.principal_name,
            "RootKey": isinstance(owner, Account),
            "Status": found.status.value,
            "InRecycleBin": found.in_recycle_bin,
            "Store": locations[found.store_index],
        }
    )
    return 0


# -- state changes ------------------------------------------------------------------


def _state_change(change: Callable[[KeyManager, str], AccessKeyInfo], done: str) -> Command:
    def run(args: argparse.Namespace, console: Console) -> int:
        with open_store(args.db) as store:
            info = change(KeyManager(store), args.access_key_id)
        if not console.json_output:
            console.note(f"{args.access_key_id}: {done}")
        console.record(info.to_ram_dict())
        return 0

    return run


def _delete(args: argparse.Namespace, console: Console) -> int:
    with open_store(args.db) as store:
        deleted = KeyManager(store).delete_access_key(args.access_key_id)
    record = {
        "AccessKeyId": deleted.access_key_id,
        "Purged": deleted.purged,
        "RecycleDate": utc_text(deleted.recycled_at),
        "DeleteDate": utc_text(deleted.purge_at),
        "Evicted": list(deleted.evicted),
    }
    if console.json_output:
        console.json(record)
        return 0
    if deleted.purged:
        console.line(
            f"{deleted.access_key_id} purged at once: an account's own key has no recycle bin"
        )
    else:
        console.line(
            f"{deleted.access_key_id} moved to the recycle bin; it is purged at "
            f"{record['DeleteDate']} (DeleteDate) unless restored with "
            f"`aliak keys restore {deleted.access_key_id}`"
        )
    if deleted.evicted:
        console.line("purged to make room in the full recycle bin: " + ", ".join(deleted.evicted))
    return 0


def _purge(args: argparse.Namespace, console: Console) -> int:
    with open_store(args.db) as store:
        KeyManager(store).purge_access_key(args.access_key_id)
    if console.json_output:
        console.json({"AccessKeyId": args.access_key_id, "Purged": True})
    else:
        console.line(f"{args.access_key_id} purged: its secret is destroyed, for good")
    return 0


def _purge_expired(args: argparse.Namespace, console: Console) -> int:
    with open_store(args.db) as store:
        purged = KeyManager(store).purge_expired()
    if console.json_output:
        console.json({"Purged": purged})
    elif purged:
        console.line("purged after 30 days in the recycle bin: " + ", ".join(purged))
    else:
        console.line("nothing in the recycle bin has reached its DeleteDate")
    return 0


# -- the parser ---------------------------------------------------------------------


def _key_id_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
    name: str,
    help_text: str,
    run: Command,
) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, parents=[common], help=help_text, description=help_text)
    parser.add_argument("access_key_id", metavar="ID", help="the AccessKey id")
    parser.set_defaults(run=run)
    return parser


def _owner_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
    name: str,
    help_text: str,
    run: Command,
) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, parents=[common], help=help_text, description=help_text)
    parser.add_argument("--account", required=True, metavar="ID", help="the account id")
    parser.add_argument(
        "--user", metavar="NAME", help="a RAM user of the account (default: the account itself)"
    )
    parser.set_defaults(run=run)
    return parser


def add_keys_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    keys = commands.add_parser(
        "keys", help="create, list and manage AccessKeys", description="AccessKey administration."
    )
    sub = keys.add_subparsers(dest="keys_command", metavar="COMMAND", required=True)
    _owner_command(
        sub,
        common,
        "create",
        "create an AccessKey; prints its secret this once (with no --user, a root key for "
        "the account itself: discouraged)",
        _create,
    )
    _owner_command(sub, common, "list", "list an owner's keys (metadata only)", _list)
    _owner_command(
        sub,
        common,
        "recycle-bin",
        "list an owner's deleted keys, restorable for 30 days",
        _recycle_bin,
    )
    _key_id_command(sub, common, "show", "show one key's metadata (never its secret)", _show)
    _key_id_command(
        sub,
        common,
        "disable",
        "disable a key: verifiers refuse it",
        _state_change(KeyManager.disable_access_key, "disabled (Inactive)"),
    )
    _key_id_command(
        sub,
        common,
        "enable",
        "enable a key again",
        _state_change(KeyManager.enable_access_key, "enabled (Active)"),
    )
    _key_id_command(
        sub,
        common,
        "delete",
        "delete a disabled key: to the recycle bin for 30 days (an account's own key is "
        "purged at once)",
        _delete,
    )
    _key_id_command(
        sub,
        common,
        "restore",
        "restore a key from the recycle bin (it comes back disabled)",
        _state_change(KeyManager.restore_access_key, "restored from the recycle bin (Inactive)"),
    )
    _key_id_command(
        sub, common, "purge", "purge a key from the recycle bin now; irreversible", _purge
    )
    purge_expired = sub.add_parser(
        "purge-expired",
        parents=[common],
        help="purge the keys whose 30 days in the recycle bin are over",
    )
    purge_expired.set_defaults(run=_purge_expired)
    last_used = _key_id_command(
        sub, common, "last-used", "when a key was last used, and by which service", _last_used
    )
    last_used.add_argument("--ips", action="store_true", help="also the source IP history")
    find_owner = _key_id_command(
        sub, common, "find-owner", "who owns a key id (recycle bin included)", _find_owner
    )
    find_owner.add_argument(
        "--db-also",
        nargs="+",
        metavar="PATH",
        help="other aliak SQLite stores to search too",
    )
    _key_id_command(
        sub,
        common,
        "rotate",
        "create the replacement of a key for the same owner; as a creation, it prints the "
        "new secret this once (the old key is left as it is)",
        _rotate,
    )
    _key_id_command(
        sub,
        common,
        "mark-leaked",
        "restrict a leaked key, for good: verifiers refuse it the high-risk actions "
        "(Alibaba's published list by default, or the server's own); where a verifier "
        "is not told which service it guards, that means every action",
        _state_change(
            KeyManager.mark_leaked,
            "marked leaked; rotate it (`aliak keys rotate`), then disable and delete it",
        ),
    )
