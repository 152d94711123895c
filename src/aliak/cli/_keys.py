"""``aliak keys ...``: the AccessKey lifecycle, in the RAM console's words.

A secret is printed once, by the commands that create a key (``create``, ``rotate``),
with a warning on stderr; every other command shows metadata only. ``import`` takes an
existing secret from ``$ALIAK_IMPORT_SECRET`` or stdin, never from an argument (which
``ps`` would show), and prints it nowhere.

Every change is recorded under the command's actor (``--actor``, else ``$ALIAK_ACTOR``,
else the OS user). The account id of anything created must match
``$ALIAK_ACCOUNT_ID_PATTERN`` (a regular expression, matched in full) when it is set, so
that a mistyped id is refused before it owns anything; the library itself accepts any
``[A-Za-z0-9._-]{1,64}``.
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path

from aliak.algorithms import load_rsa_public_key
from aliak.cli._console import CommandFailed, Console, utc_text
from aliak.cli._store import open_admin_store, redact_url
from aliak.credentials import check_access_key_id, is_sts_access_key_id
from aliak.errors import InvalidParameter, OwnerNotFound
from aliak.keys import (
    ROTATION_AGE,
    AccessKeyInfo,
    KeyManager,
    NewAccessKey,
    RootAccessKeyWarning,
)
from aliak.model import Account, KeyStatus, Owner, RamUser
from aliak.storage.protocols import Store

__all__ = [
    "DEFAULT_ACCOUNT_ID_PATTERN",
    "DOCUMENTED_ACCOUNT_ID_PATTERN",
    "ENV_ACCOUNT_ID_PATTERN",
    "ENV_IMPORT_SECRET",
    "SHOWN_ONCE_WARNING",
    "add_keys_commands",
    "check_new_account_id",
    "manager",
    "new_owner_from",
    "owner_from",
]

ENV_ACCOUNT_ID_PATTERN = "ALIAK_ACCOUNT_ID_PATTERN"
ENV_IMPORT_SECRET = "ALIAK_IMPORT_SECRET"  # noqa: S105 - a variable name
# Alibaba Cloud account ids (UIDs) are 16 digits.
DOCUMENTED_ACCOUNT_ID_PATTERN = r"[0-9]{16}"
# The pattern in force when $ALIAK_ACCOUNT_ID_PATTERN is unset: a mistyped id must not
# silently make an account nobody can find. Deployments with other ids configure theirs;
# what a store already holds stays readable and changeable whatever the pattern.
DEFAULT_ACCOUNT_ID_PATTERN: str | None = DOCUMENTED_ACCOUNT_ID_PATTERN

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


def _account_id_pattern() -> tuple[re.Pattern[str], str] | None:
    """The pattern new account ids must match, and where it came from; None for none."""
    text = os.environ.get(ENV_ACCOUNT_ID_PATTERN)
    source = f"${ENV_ACCOUNT_ID_PATTERN}"
    if not text:
        if DEFAULT_ACCOUNT_ID_PATTERN is None:
            return None
        text, source = DEFAULT_ACCOUNT_ID_PATTERN, "the documented 16-digit form"
    try:
        return re.compile(text), source
    except re.error as error:
        raise CommandFailed(
            f"{ENV_ACCOUNT_ID_PATTERN} is not a valid regular expression ({error}); set it "
            f"to one an account id must match in full, e.g. {DOCUMENTED_ACCOUNT_ID_PATTERN}, "
            "or unset it"
        ) from None


def check_new_account_id(account_id: str) -> str:
    """``account_id`` if an account may be given something new under it (a key, a role,
    a policy): the library's form, and the configured pattern when there is one."""
    Account(account_id)
    found = _account_id_pattern()
    if found is not None:
        pattern, source = found
        if pattern.fullmatch(account_id) is None:
            raise InvalidParameter(
                "AccountId",
                detail=f"an account id here must match the pattern {pattern.pattern!r} (from "
                f"{source}, matched in full); set {ENV_ACCOUNT_ID_PATTERN} to another regular "
                "expression for other ids",
            )
    return account_id


def new_owner_from(account_id: str, user_name: str | None) -> Owner:
    """:func:`owner_from` for an owner about to be given a key: its account id checked
    by :func:`check_new_account_id` too."""
    return owner_from(check_new_account_id(account_id), user_name)


def manager(store: Store, args: argparse.Namespace) -> KeyManager:
    """The store's :class:`KeyManager`, recording changes under the command's actor."""
    return KeyManager(store, actor=args.actor)


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
    owner = new_owner_from(args.account, args.user)
    with open_admin_store(args.db, may_create=True) as store, _show_root_key_warnings(console):
        new = manager(store, args).create_access_key(owner)
    _print_new_key(console, new, {})
    return 0


def _rotate(args: argparse.Namespace, console: Console) -> int:
    with open_admin_store(args.db) as store, _show_root_key_warnings(console):
        new = manager(store, args).rotate_access_key(args.access_key_id)
    _print_new_key(console, new, {"Replaces": args.access_key_id})
    console.note(
        f"next: move every client to {new.access_key_id}, watch `aliak keys last-used "
        f"{args.access_key_id}`, then disable and delete {args.access_key_id}"
    )
    return 0


# -- reading ------------------------------------------------------------------------


def _owner_keys(
    read: Callable[[Owner], list[AccessKeyInfo]], keys: KeyManager, owner: Owner
) -> list[AccessKeyInfo]:
    """``read(owner)``, where an account with no key of its own has none: the store
    knows owners through their keys, and an account's own key is purged at once when
    deleted, so an account known by its RAM users' keys only is empty, not unknown. An
    account the store holds no key of at all stays unknown, as for ``keys list``."""
    try:
        return read(owner)
    except OwnerNotFound:
        if not isinstance(owner, Account):
            raise
        keys.list_account_access_keys(owner.account_id)  # OwnerNotFound: unknown to the store
        return []


def _list(args: argparse.Namespace, console: Console) -> int:
    if args.user is not None and args.root_only:
        args.subparser.error("--root-only lists the account's own keys: give no --user")
    if args.user is None and not args.root_only:
        Account(args.account)  # validated before any store is opened
        with open_admin_store(args.db) as store:
            keys = manager(store, args).list_account_access_keys(args.account)
        whom = f"account {args.account} or any of its RAM users"
    else:
        owner = owner_from(args.account, args.user)
        with open_admin_store(args.db) as store:
            admin = manager(store, args)
            keys = _owner_keys(admin.list_access_keys, admin, owner)
        whom = owner.principal_name
    rows = [info.to_ram_dict() for info in keys]
    console.records(_KEY_COLUMNS, rows, empty=f"no keys outside the recycle bin for {whom}")
    return 0


def _recycle_bin(args: argparse.Namespace, console: Console) -> int:
    owner = owner_from(args.account, args.user)
    with open_admin_store(args.db) as store:
        admin = manager(store, args)
        keys = _owner_keys(admin.list_recycle_bin, admin, owner)
    rows = [info.to_ram_dict() for info in keys]
    console.records(
        _RECYCLE_BIN_COLUMNS, rows, empty=f"the recycle bin of {owner.principal_name} is empty"
    )
    return 0


def _show(args: argparse.Namespace, console: Console) -> int:
    with open_admin_store(args.db) as store:
        info = manager(store, args).get_access_key(args.access_key_id)
    console.record(info.to_ram_dict())
    return 0


def _last_used(args: argparse.Namespace, console: Console) -> int:
    with open_admin_store(args.db) as store:
        keys = manager(store, args)
        last = keys.get_last_used(args.access_key_id)
        history = keys.source_ip_history(args.access_key_id) if args.ips else None
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
        store = stores.enter_context(open_admin_store(args.db))
        # Only key metadata is read from the others: no master key needed, none touched.
        others = [
            stores.enter_context(open_admin_store(location, reads_secrets=False))
            for location in locations[1:]
        ]
        found = manager(store, args).find_owner(args.access_key_id, *others)
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
            "Store": redact_url(locations[found.store_index]),
        }
    )
    return 0


# -- state changes ------------------------------------------------------------------


def _state_change(change: Callable[[KeyManager, str], AccessKeyInfo], done: str) -> Command:
    def run(args: argparse.Namespace, console: Console) -> int:
        with open_admin_store(args.db) as store:
            info = change(manager(store, args), args.access_key_id)
        if not console.json_output:
            console.note(f"{args.access_key_id}: {done}")
        console.record(info.to_ram_dict())
        return 0

    return run


def _delete(args: argparse.Namespace, console: Console) -> int:
    with open_admin_store(args.db) as store:
        deleted = manager(store, args).delete_access_key(args.access_key_id)
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
    with open_admin_store(args.db) as store:
        manager(store, args).purge_access_key(args.access_key_id)
    if console.json_output:
        console.json({"AccessKeyId": args.access_key_id, "Purged": True})
    else:
        console.line(f"{args.access_key_id} purged: its secret is destroyed, for good")
    return 0


def _purge_expired(args: argparse.Namespace, console: Console) -> int:
    with open_admin_store(args.db) as store:
        purged = manager(store, args).purge_expired()
    if console.json_output:
        console.json({"Purged": purged})
    elif purged:
        console.line("purged after 30 days in the recycle bin: " + ", ".join(purged))
    else:
        console.line("nothing in the recycle bin has reached its DeleteDate")
    return 0


# -- bringing keys in ---------------------------------------------------------------


def _import_secret() -> str:
    """The secret to import: ``$ALIAK_IMPORT_SECRET``, else stdin (asked for without
    echo on a terminal). Never an argument: ``ps`` would show it to every user."""
    secret = os.environ.get(ENV_IMPORT_SECRET)
    if not secret:
        if sys.stdin is None:
            secret = ""
        elif sys.stdin.isatty():
            secret = getpass.getpass("AccessKey secret (not echoed): ")
        else:
            secret = sys.stdin.read()
    secret = secret.strip()
    if not secret:
        raise InvalidParameter(
            "AccessKeySecret",
            detail=f"give the secret in ${ENV_IMPORT_SECRET} or on stdin, never as an argument",
        )
    return secret


def _check_key_id(access_key_id: str) -> None:
    """The id a stored key may have (checked before a store can be created for it)."""
    check_access_key_id(access_key_id)
    if is_sts_access_key_id(access_key_id):
        raise InvalidParameter("AccessKeyId", detail="STS. ids are temporary credentials")


def _import(args: argparse.Namespace, console: Console) -> int:
    owner = new_owner_from(args.account, args.user)
    _check_key_id(args.access_key_id)
    secret = _import_secret()
    status = KeyStatus.INACTIVE if args.inactive else KeyStatus.ACTIVE
    with open_admin_store(args.db, may_create=True) as store, _show_root_key_warnings(console):
        info = manager(store, args).import_access_key(
            owner, args.access_key_id, secret, status=status
        )
    if not console.json_output:
        console.note(f"{info.access_key_id}: imported for {owner.principal_name} ({status.value})")
    console.record(info.to_ram_dict())
    return 0


def _read_public_key(location: str) -> str:
    try:
        text = sys.stdin.read() if location == "-" else Path(location).read_text("utf-8")
    except UnicodeDecodeError:
        raise CommandFailed(f"{location} is not a PEM public key (not UTF-8 text)") from None
    load_rsa_public_key(text)  # refused now, before a store can be created for it
    return text


def _register_rsa(args: argparse.Namespace, console: Console) -> int:
    owner = new_owner_from(args.account, args.user)
    if args.access_key_id is not None:
        _check_key_id(args.access_key_id)
    public_key = _read_public_key(args.public_key)
    with open_admin_store(args.db, may_create=True) as store, _show_root_key_warnings(console):
        info = manager(store, args).register_public_key(
            owner, public_key, access_key_id=args.access_key_id
        )
    if console.json_output:
        console.json(info.to_ram_dict())
    else:
        console.line(info.access_key_id)
        console.note(
            f"registered an ACS3-RSA-SHA256 key for {owner.principal_name}: clients sign with "
            f"the private key and AccessKey id {info.access_key_id}"
        )
    return 0


# -- rotation -----------------------------------------------------------------------


def _days(text: str) -> int:
    """A whole number of days >= 1 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of days, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of days >= 1, got {text!r}")
    return value


def _in_days(days: int) -> str:
    return "1 day" if days == 1 else f"{days} days"


def _rotation_report(args: argparse.Namespace, console: Console) -> int:
    if args.account is not None:
        Account(args.account)  # validated before any store is opened
    with open_admin_store(args.db) as store:
        report = manager(store, args).rotation_report(max_age=timedelta(days=args.max_age_days))
    mine = (
        (lambda owner: True)
        if args.account is None
        else (lambda owner: owner.account_id == args.account)
    )
    old = [
        {**info.to_ram_dict(), "AgeDays": info.age(report.generated_at).days}
        for info in report.old_keys
        if mine(info.owner)
    ]
    several = [
        owner.principal_name for owner in report.owners_with_several_active_keys if mine(owner)
    ]
    if console.json_output:
        console.json(
            {
                "GeneratedAt": utc_text(report.generated_at),
                "MaxAgeDays": args.max_age_days,
                "AccountId": args.account,
                "OldKeys": old,
                "OwnersWithSeveralActiveKeys": several,
            }
        )
        return 0
    if old:
        console.line(
            f"keys older than {_in_days(args.max_age_days)} (rotate them: `aliak keys rotate ID`):"
        )
        console.table(
            ("AccessKeyId", "UserPrincipalName", "Status", "CreateDate", "AgeDays", "LastUsedDate"),
            old,
        )
    else:
        console.line(f"no key is older than {_in_days(args.max_age_days)}")
    if several:
        console.line(
            "owners with more than one active key (finish the rotation: disable and delete "
            "the old one): " + ", ".join(several)
        )
    else:
        console.line("no owner has more than one active key")
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
    *,
    user_help: str = "a RAM user of the account (default: the account itself)",
) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, parents=[common], help=help_text, description=help_text)
    parser.add_argument("--account", required=True, metavar="ID", help="the account id")
    parser.add_argument("--user", metavar="NAME", help=user_help)
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
    listing = _owner_command(
        sub,
        common,
        "list",
        "list keys (metadata only): with --account alone, every key of the account, its own "
        "and every RAM user's; with --user, that user's; with --root-only, the account's own",
        _list,
        user_help="only this RAM user's keys (default: the whole account's)",
    )
    listing.add_argument(
        "--root-only",
        action="store_true",
        help="only the account's own (root) keys, not its RAM users'",
    )
    listing.set_defaults(subparser=listing)
    imported = _owner_command(
        sub,
        common,
        "import",
        f"store an existing AccessKey id and secret (a migration); the secret comes from "
        f"${ENV_IMPORT_SECRET}, else stdin, never from an argument, and is printed nowhere",
        _import,
    )
    imported.add_argument(
        "--access-key-id", required=True, metavar="ID", help="the existing AccessKey id"
    )
    imported.add_argument("--inactive", action="store_true", help="import it disabled")
    register_rsa = _owner_command(
        sub,
        common,
        "register-rsa",
        "register an ACS3-RSA-SHA256 key: the store keeps the public key, the client signs "
        "with the private one; prints the new AccessKey id",
        _register_rsa,
    )
    register_rsa.add_argument(
        "--public-key",
        required=True,
        metavar="FILE",
        help="the PEM public key (SubjectPublicKeyInfo or PKCS#1); '-' for stdin",
    )
    register_rsa.add_argument(
        "--access-key-id", metavar="ID", help="the id to register it under (default: a new one)"
    )
    report = sub.add_parser(
        "rotation-report",
        parents=[common],
        help="keys due for rotation, and owners with more than one active key",
        description="Keys older than --max-age-days (outside the recycle bin, active or "
        "not), and owners with more than one active key (a rotation left unfinished).",
    )
    report.add_argument("--account", metavar="ID", help="only this account's keys and users")
    report.add_argument(
        "--max-age-days",
        type=_days,
        default=ROTATION_AGE.days,
        metavar="N",
        help=f"a key older than N days is due (default {ROTATION_AGE.days})",
    )
    report.set_defaults(run=_rotation_report)
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
        help="other aliak stores to search too (SQLite paths or PostgreSQL DSNs)",
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
