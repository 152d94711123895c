"""``aliak sts assume-role``: temporary credentials, printed once."""

from __future__ import annotations

import argparse

from aliak.cli._console import Console, utc_text
from aliak.cli._keys import SHOWN_ONCE_WARNING, check_new_account_id, manager
from aliak.cli._store import open_admin_store
from aliak.errors import InvalidParameter
from aliak.model import AssumedRole, RamRole
from aliak.sts import DEFAULT_DURATION, MAX_DURATION, MIN_DURATION

__all__ = ["add_sts_commands"]


def _assume_role(args: argparse.Namespace, console: Console) -> int:
    # Validated before the store is opened: a refused request must not create a store.
    check_new_account_id(args.account)
    role = RamRole(args.account, args.role, max_session_duration=args.max_session_duration)
    AssumedRole(role, args.session)
    if not MIN_DURATION <= args.duration <= role.max_session_duration:
        raise InvalidParameter(
            "DurationSeconds",
            detail=f"{MIN_DURATION} to {role.max_session_duration} seconds for this role; "
            f"raise --max-session-duration (up to {MAX_DURATION}) for longer",
        )
    with open_admin_store(args.db, may_create=True) as store:
        credential = manager(store, args).assume_role(
            role, session_name=args.session, duration=args.duration
        )
    record = {
        "AccessKeyId": credential.access_key_id,
        "AccessKeySecret": credential.secret.reveal(),
        "SecurityToken": credential.security_token.reveal(),
        "Expiration": utc_text(credential.expiration),
    }
    console.warn(SHOWN_ONCE_WARNING.replace("the secret is", "the secret and token are"))
    if console.json_output:
        console.json(record)
    else:
        console.fields({**record, "Arn": AssumedRole(role, args.session).arn})
    return 0


def add_sts_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    sts = commands.add_parser(
        "sts", help="temporary credentials (STS)", description="Security Token Service."
    )
    sub = sts.add_subparsers(dest="sts_command", metavar="COMMAND", required=True)
    assume = sub.add_parser(
        "assume-role",
        parents=[common],
        help="issue temporary credentials for a RAM role; prints them this once",
        description="STS AssumeRole: an STS. AccessKey id, its secret and a security token, "
        "accepted by any verifier of this store until they expire. Printed this once.",
    )
    assume.add_argument("--account", required=True, metavar="ID", help="the role's account id")
    assume.add_argument("--role", required=True, metavar="NAME", help="the RAM role name")
    assume.add_argument(
        "--session", required=True, metavar="NAME", help="RoleSessionName (2-64 characters)"
    )
    assume.add_argument(
        "--duration",
        type=int,
        default=DEFAULT_DURATION,
        metavar="SECONDS",
        help=f"DurationSeconds, {MIN_DURATION} up to the role's maximum (default "
        f"{DEFAULT_DURATION})",
    )
    assume.add_argument(
        "--max-session-duration",
        type=int,
        default=3600,
        metavar="SECONDS",
        help=f"the role's MaxSessionDuration, 3600 to {MAX_DURATION} (default 3600)",
    )
    assume.set_defaults(run=_assume_role)
