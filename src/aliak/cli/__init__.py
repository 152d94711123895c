"""The ``aliak`` command.

``aliak demo`` signs the documented worked example (spec ``acs3-signature.md`` §9) and
prints each stage, labelled; it exits non-zero if any stage differs from the documented
value, so it doubles as a smoke test of an installation.

The other commands administer a store (``keys``, ``acl``, ``sts``, ``audit``), sign
(``sign``) and verify (``verify``, ``serve``). The store is the SQLite file given by
``--db``, else ``$ALIAK_DB``, else ``./aliak.db``. Every command takes ``--json`` for
scripts; without it, output is aligned text for people. Exit status: 0 done, 1 refused
(an ``AliakError``, printed as ``error: <Code>: <Message> (<detail>)``, or a store that
cannot be used), 2 a usage error. A failed command leaves the store as it was.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable, Sequence

from aliak import __version__
from aliak.cli._acl import add_acl_commands
from aliak.cli._audit import add_audit_command
from aliak.cli._completion import add_completion_command
from aliak.cli._console import CommandFailed, Console
from aliak.cli._keys import add_keys_commands
from aliak.cli._master_key import add_master_key_commands
from aliak.cli._roles import add_roles_commands
from aliak.cli._serve import add_serve_command
from aliak.cli._sign import add_sign_command
from aliak.cli._store import ENV_DB, store_path
from aliak.cli._sts import add_sts_commands
from aliak.cli._verify import add_verify_command
from aliak.demo import run_demo
from aliak.errors import AliakError

__all__ = ["ENV_ACTOR", "actor_name", "main"]

ENV_ACTOR = "ALIAK_ACTOR"

Command = Callable[[argparse.Namespace, Console], int]


def actor_name(option: str | None) -> str:
    """``--actor``, else ``$ALIAK_ACTOR``, else the OS user (``cli:<user>``), else
    ``aliak``: the name every change this command makes is recorded under."""
    if option:
        return option
    if os.environ.get(ENV_ACTOR):
        return os.environ[ENV_ACTOR]
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no user name for this uid (a bare container)
        return "aliak"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aliak", description="Alibaba Cloud V3 request signing and AccessKey verification."
    )
    parser.add_argument(
        "--db",
        metavar="PATH|DSN",
        help=f"the store (default: ${ENV_DB}, else ./aliak.db): a SQLite file, its master key "
        "in PATH.key (or $ALIAK_MASTER_KEY); or a postgresql:// DSN, its master key in "
        "$ALIAK_MASTER_KEY, its schema $ALIAK_POSTGRES_SCHEMA (default public). With "
        "$ALIAK_NONCES=redis://..., verify and serve claim nonces in Redis",
    )
    parser.add_argument(
        "--actor",
        metavar="NAME",
        help=f"who makes the changes, for the audit trail (default: ${ENV_ACTOR}, else the "
        "OS user)",
    )
    parser.add_argument("--version", action="version", version=f"aliak {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("demo", help="sign the documented worked example and show each stage")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable JSON output")
    add_keys_commands(commands, common)
    add_acl_commands(commands, common)
    add_roles_commands(commands, common)
    add_master_key_commands(commands, common)
    add_sts_commands(commands, common)
    add_sign_command(commands, common)
    add_verify_command(commands, common)
    add_serve_command(commands, common)
    add_audit_command(commands, common)
    add_completion_command(commands, parser)
    return parser


def _run(command: Command, args: argparse.Namespace, console: Console) -> int:
    """The command; a refusal exits 1, printed as ``error: <text>``, or under ``--json``
    as one JSON object on stderr: ``{"Code", "Message", "Detail"}`` (Alibaba's code for
    an ``AliakError``; ``CommandFailed`` or ``OSError`` otherwise)."""
    try:
        return command(args, console)
    except AliakError as error:
        console.failure(str(error), code=error.code, message=error.message, detail=error.detail)
    except CommandFailed as error:
        console.failure(str(error), code="CommandFailed", message=str(error), detail=None)
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        reason = error.strerror or str(error)
        filename = None if error.filename is None else str(error.filename)
        console.failure(f"{where}{reason}", code="OSError", message=reason, detail=filename)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        return run_demo(sys.stdout)
    command: Command | None = getattr(args, "run", None)
    if command is None:
        parser.print_help(sys.stderr)
        return 2
    args.db = store_path(args.db)
    args.actor = actor_name(args.actor)
    # Every command but `completion` takes --json.
    console = Console(json_output=getattr(args, "json", False), out=sys.stdout, err=sys.stderr)
    try:
        return _run(command, args, console)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
