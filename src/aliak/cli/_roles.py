"""``aliak roles ...``: RAM roles and who may assume them, for ``aliak serve --sts``.

A role trusts principals by ARN, as Alibaba's trust policies do: ``acs:ram::<account>:root``
(every RAM user and role session of that account), ``acs:ram::<account>:user/<name>``,
``acs:ram::<account>:role/<name>`` (role chaining).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from aliak.cli._console import Console
from aliak.cli._keys import check_new_account_id, manager
from aliak.cli._store import open_admin_store
from aliak.errors import InvalidParameter
from aliak.model import RamRole
from aliak.roles import RoleRecord, normalize_trusted_principal

__all__ = ["add_roles_commands"]

_COLUMNS = ("RoleName", "Arn", "RoleId", "MaxSessionDuration", "CreateDate", "Description")
ENV_EXTERNAL_ID = "ALIAK_ROLE_EXTERNAL_ID"

Command = Callable[[argparse.Namespace, Console], int]


def _trusted(values: list[str] | None) -> list[str] | None:
    # Validated before the store is opened: a refused command must not create a store.
    return None if values is None else [normalize_trusted_principal(value) for value in values]


def _external_id(args: argparse.Namespace) -> str | None:
    """From the environment, never from an argument (it would show in ``ps``)."""
    if not getattr(args, "external_id_from_env", False):
        return None
    value = os.environ.get(ENV_EXTERNAL_ID)
    if not value:
        raise InvalidParameter("ExternalId", detail=f"set {ENV_EXTERNAL_ID} to the external id")
    return value


def _shown(record: RoleRecord) -> dict[str, object]:
    shown = record.to_dict()
    shown["Trusted"] = list(record.trusted)
    shown["ExternalId"] = "set" if record.external_id is not None else "none"
    return shown


def _create(args: argparse.Namespace, console: Console) -> int:
    check_new_account_id(args.account)
    role = RamRole(args.account, args.name, max_session_duration=args.max_session_duration)
    trusted = _trusted(args.trust) or []
    external_id = _external_id(args)
    with open_admin_store(args.db, may_create=True) as store:
        record = manager(store, args).create_role(
            role, trusted=trusted, description=args.description, external_id=external_id
        )
    console.record(_shown(record))
    return 0


def _list(args: argparse.Namespace, console: Console) -> int:
    with open_admin_store(args.db) as store:
        roles = manager(store, args).list_roles(args.account)
    console.records(
        _COLUMNS, [role.to_dict() for role in roles], empty=f"no roles in account {args.account}"
    )
    return 0


def _show(args: argparse.Namespace, console: Console) -> int:
    with open_admin_store(args.db) as store:
        record = manager(store, args).get_role(args.account, args.name)
    console.record(_shown(record))
    return 0


def _update(args: argparse.Namespace, console: Console) -> int:
    trusted = _trusted(args.trust)
    options: dict[str, object] = {}
    if args.external_id_from_env:
        options["external_id"] = _external_id(args)
    elif args.remove_external_id:
        options["external_id"] = None
    with open_admin_store(args.db) as store:
        record = manager(store, args).update_role(
            args.account,
            args.name,
            trusted=trusted,
            max_session_duration=args.max_session_duration,
            description=args.description,
            **options,  # type: ignore[arg-type]
        )
    console.record(_shown(record))
    return 0


def _delete(args: argparse.Namespace, console: Console) -> int:
    with open_admin_store(args.db) as store:
        manager(store, args).delete_role(args.account, args.name)
    console.note(
        f"deleted role {args.name} of account {args.account}; credentials already issued "
        "for it stay valid until they expire"
    )
    return 0


def _role_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
    name: str,
    help_text: str,
    run: Command,
    *,
    with_name: bool = True,
) -> argparse.ArgumentParser:
    command = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
    command.add_argument("--account", required=True, metavar="ID", help="the role's account id")
    if with_name:
        command.add_argument("--name", required=True, metavar="NAME", help="the role name")
    command.set_defaults(run=run)
    return command


def _trust_argument(command: argparse.ArgumentParser, *, required: bool) -> None:
    command.add_argument(
        "--trust",
        nargs="+",
        action="extend",
        required=required,
        metavar="ARN",
        help="principals that may assume the role: acs:ram::<account>:root, "
        "acs:ram::<account>:user/<name>, acs:ram::<account>:role/<name>"
        + ("" if required else " (replaces the whole list)"),
    )


def add_roles_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    roles = commands.add_parser(
        "roles",
        help="RAM roles and their trust, for STS AssumeRole",
        description="RAM roles: who may assume them (aliak serve --sts answers AssumeRole).",
    )
    sub = roles.add_subparsers(dest="roles_command", metavar="COMMAND", required=True)
    create = _role_command(sub, common, "create", "store a role and who may assume it", _create)
    _trust_argument(create, required=True)
    create.add_argument(
        "--max-session-duration",
        type=int,
        default=3600,
        metavar="SECONDS",
        help="the role's MaxSessionDuration, 3600 to 43200 (default 3600)",
    )
    create.add_argument("--description", default="", help="free text (at most 1024 characters)")
    create.add_argument(
        "--external-id-from-env",
        action="store_true",
        help=f"require AssumeRole to present the external id in ${ENV_EXTERNAL_ID}",
    )
    _role_command(sub, common, "list", "list an account's roles", _list, with_name=False)
    _role_command(sub, common, "show", "show a role and its trust", _show)
    update = _role_command(sub, common, "update", "change a role's trust or limits", _update)
    _trust_argument(update, required=False)
    update.add_argument("--max-session-duration", type=int, metavar="SECONDS")
    update.add_argument("--description")
    external = update.add_mutually_exclusive_group()
    external.add_argument(
        "--external-id-from-env",
        action="store_true",
        help=f"set the required external id from ${ENV_EXTERNAL_ID}",
    )
    external.add_argument(
        "--remove-external-id", action="store_true", help="no longer require an external id"
    )
    _role_command(sub, common, "delete", "delete a role", _delete)
